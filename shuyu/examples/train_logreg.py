# type: ignore
# ruff: noqa: F821
# A model job for the demo scenario: a logistic regression that predicts whether a
# resident's household income is at least 30,000 yuan from age band, sex and district.
#
#   shuyu job submit --scenario S-2026-001 --python shuyu/examples/train_logreg.py --as operator
#
# It runs in the sandbox under RestrictedPython. `shuyu` is the platform's object:
# `shuyu.table` returns the scenario's desensitized sample (R1.5: sampled, pseudonymized,
# ages in 10-year bands), minus the rows the platform holds out to test the model. Every
# transformation sits inside the pipeline, fit on the table's own columns, and the target
# is declared in `emit_model`, so the gate can rebuild the training rows and refit the model.
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

df = shuyu.table("residents")
income_high = df["income"] >= 30000

columns = ["age", "sex", "district"]
encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), columns)])
model = Pipeline([("encode", encode), ("classify", LogisticRegression(C=1.0, max_iter=1000))])
model.fit(df[columns], income_high)
shuyu.emit_model("income_model", model, target="income >= 30000")
