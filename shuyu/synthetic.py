"""Synthetic demo data: a seeded resident / social-benefit table of any size, with its META.

Every value is made up, but shaped like the real thing so the whole flow means something:
18-digit resident ID numbers with a valid GB 11643 check digit whose region prefix matches
the district and whose birth date matches the age; Chinese names; a skewed, bounded
income; several benefit records per person (up to ``max_rows_per_person``), so bounding
each privacy unit's contribution actually matters.

Rows are generated in vectorised batches and written as they come, so 10,000,000 rows
need neither all of memory nor much time. ``canaries`` plants marker strings in the
``name`` column so tests can search the disk for any plaintext that escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

__all__ = [
    "BENEFIT_TYPES",
    "DISTRICTS",
    "DemoFiles",
    "demo_batches",
    "demo_meta",
    "demo_schema",
    "id_check_digit",
    "is_valid_id_number",
    "write_demo_data",
]

# (GB/T 2260 style region code, district name): the districts of one city.
DISTRICTS: tuple[tuple[str, str], ...] = (
    ("430102", "芙蓉区"),
    ("430103", "天心区"),
    ("430104", "岳麓区"),
    ("430105", "开福区"),
    ("430111", "雨花区"),
    ("430112", "望城区"),
    ("430121", "长沙县"),
    ("430181", "浏阳市"),
    ("430182", "宁乡市"),
    ("430100", "市本级"),
)
_DISTRICT_WEIGHTS = np.array([9, 8, 12, 9, 13, 8, 12, 13, 11, 5], dtype=np.float64)

BENEFIT_TYPES: tuple[str, ...] = (
    "低保",
    "特困供养",
    "临时救助",
    "医疗救助",
    "教育救助",
    "住房救助",
    "残疾人补贴",
    "高龄津贴",
)
_BENEFIT_WEIGHTS = np.array([30, 6, 14, 18, 10, 6, 9, 7], dtype=np.float64)
_BENEFIT_BASE_YUAN = np.array([850, 1400, 600, 2500, 1500, 3000, 300, 200], dtype=np.float64)
SEXES: tuple[str, ...] = ("女", "男")

_SURNAMES = tuple(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺"
)
_GIVEN = tuple(
    dict.fromkeys(
        "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红玲芬燕彩春菊凤洁梅琳素云莲真"
        "环雪荣爱香月瑞凡佳嘉琼勤珍贞莉叶璐琦晶妍秋珊锦青倩婷婉颖露瑶怡丹蓉君琴薇梦岚馨韵悦冰"
        "宁欣柔竹晓欢枫建国志文斌辉鹏浩宇俊峰海波亮新利德成林松涛昊天博睿子轩梓豪一鸣思远"
    )
)

INCOME_MAX_YUAN = 500_000.0
BENEFIT_AMOUNT_MAX_YUAN = 20_000.0
VISITS_MAX = 60
REFERENCE_YEAR = 2025  # ages are as of 31 December of this year

_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = b"10X98765432"


def id_check_digit(first17: str) -> str:
    """The GB 11643 check character of the first 17 digits of a resident ID number."""
    total = sum(int(d) * int(w) for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return chr(_ID_CHECK[total % 11])


def is_valid_id_number(s: str) -> bool:
    return (
        len(s) == 18
        and s[:17].isdigit()
        and s[17] in "0123456789X"
        and id_check_digit(s[:17]) == s[17]
    )


def demo_schema() -> pa.Schema:
    return pa.schema(
        [
            ("person_id", pa.int64()),
            ("id_number", pa.string()),
            ("name", pa.string()),
            ("sex", pa.string()),
            ("age", pa.int64()),
            ("district", pa.string()),
            ("income", pa.float64()),
            ("benefit_type", pa.string()),
            ("benefit_amount", pa.float64()),
            ("visits", pa.int64()),
            ("record_date", pa.date32()),
        ]
    )


def _digits(values: np.ndarray[Any, Any], width: int) -> np.ndarray[Any, Any]:
    """(n,) non-negative ints -> (n, width) decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers[None, :]) % 10


def _id_numbers(
    district: np.ndarray[Any, Any],
    birth: np.ndarray[Any, Any],
    male: np.ndarray[Any, Any],
    rng: np.random.Generator,
) -> pa.Array:
    n = len(district)
    region = np.array([int(code) for code, _ in DISTRICTS], dtype=np.int64)[district]
    years = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    months = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    days = (birth - birth.astype("datetime64[M]")).astype(np.int64) + 1
    # sequence code: its last digit is odd for men, even for women (GB 11643)
    seq = rng.integers(0, 500, n, dtype=np.int64) * 2 + male.astype(np.int64)
    body = np.concatenate(
        [
            _digits(region, 6),
            _digits(years * 10000 + months * 100 + days, 8),
            _digits(seq, 3),
        ],
        axis=1,
    )
    check = np.frombuffer(_ID_CHECK, dtype=np.uint8)[(body @ _ID_WEIGHTS) % 11]
    chars = np.concatenate([(body + ord("0")).astype(np.uint8), check[:, None]], axis=1)
    offsets = np.arange(0, 18 * (n + 1), 18, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    )


def _names(n: int, rng: np.random.Generator) -> pa.Array:
    surname = pc.take(pa.array(_SURNAMES), pa.array(rng.integers(0, len(_SURNAMES), n)))
    given = pa.array(_GIVEN)
    first = pc.take(given, pa.array(rng.integers(0, len(_GIVEN), n)))
    # about a third of given names have one character
    second_idx = rng.integers(0, len(_GIVEN) + len(_GIVEN) // 2, n)
    second = pc.take(pa.array((*_GIVEN, *([""] * (len(_GIVEN) // 2)))), pa.array(second_idx))
    return pc.binary_join_element_wise(surname, first, second, "")


def _age_weights() -> np.ndarray[Any, Any]:
    ages = np.arange(101, dtype=np.float64)
    w = np.where(ages < 60, 1.0, np.exp(-(ages - 60) / 12.0))
    return w / w.sum()  # type: ignore[no-any-return]


def _rows_per_person_weights(max_rows: int) -> np.ndarray[Any, Any]:
    w = 0.55 ** np.arange(max_rows, dtype=np.float64)
    return w / w.sum()  # type: ignore[no-any-return]


def demo_batches(
    rows: int,
    *,
    seed: int = 0,
    max_rows_per_person: int = 5,
    canaries: Sequence[str] = (),
    batch_rows: int = 500_000,
) -> Iterator[pa.RecordBatch]:
    """Yield ``rows`` synthetic rows in batches of about ``batch_rows``; same seed, same data."""
    if rows < 1 or max_rows_per_person < 1 or batch_rows < 1:
        raise ValueError("rows, max_rows_per_person and batch_rows must be >= 1")
    rng = np.random.default_rng(seed)
    schema = demo_schema()
    k_weights = _rows_per_person_weights(max_rows_per_person)
    mean_k = float((np.arange(1, max_rows_per_person + 1) * k_weights).sum())
    age_w = _age_weights()
    district_w = _DISTRICT_WEIGHTS / _DISTRICT_WEIGHTS.sum()
    benefit_w = _BENEFIT_WEIGHTS / _BENEFIT_WEIGHTS.sum()
    canary_rows = {(j * rows) // max(len(canaries), 1): c for j, c in enumerate(canaries)}
    done = 0
    next_person = 1
    while done < rows:
        want = min(batch_rows, rows - done)
        m = max(1, math.ceil(want / mean_k * 1.05) + 8)
        k = rng.choice(np.arange(1, max_rows_per_person + 1), size=m, p=k_weights)
        cum = np.cumsum(k)
        if cum[-1] < want:  # very unlikely; top up the last person within its bound
            k[-1] = min(max_rows_per_person, k[-1] + want - int(cum[-1]))
            want = min(want, int(np.cumsum(k)[-1]))
            cum = np.cumsum(k)
        m = int(np.searchsorted(cum, want)) + 1
        k = k[:m]
        k[-1] -= int(cum[m - 1]) - want  # the last person keeps only the rows that fit

        # person-level attributes
        district = rng.choice(len(DISTRICTS), size=m, p=district_w)
        age = rng.choice(101, size=m, p=age_w).astype(np.int64)
        male = rng.integers(0, 2, m).astype(bool)
        year_start = ((REFERENCE_YEAR - age) - 1970).astype("datetime64[Y]").astype("datetime64[D]")
        year_len = np.where(((REFERENCE_YEAR - age) % 4 == 0), 366, 365)  # 2000 is a leap year
        birth = year_start + (rng.random(m) * year_len).astype("timedelta64[D]")
        income = np.clip(rng.lognormal(np.log(32_000.0), 0.9, m), 0.0, INCOME_MAX_YUAN)
        income = np.where(age < 16, 0.0, np.round(income, 2))
        ids = _id_numbers(district, birth, male, rng)
        names = _names(m, rng)

        take = pa.array(np.repeat(np.arange(m), k))
        n = int(k.sum())
        benefit = rng.choice(len(BENEFIT_TYPES), size=n, p=benefit_w)
        amount = np.clip(
            np.round(_BENEFIT_BASE_YUAN[benefit] * rng.gamma(4.0, 0.25, n), 2),
            0.0,
            BENEFIT_AMOUNT_MAX_YUAN,
        )
        visits = np.clip(rng.poisson(3.0, n), 0, VISITS_MAX).astype(np.int64)
        record_date = np.datetime64(f"{REFERENCE_YEAR}-01-01") + rng.integers(0, 365, n).astype(
            "timedelta64[D]"
        )
        name_col = pc.take(names, take)
        hits = {r - done: c for r, c in canary_rows.items() if done <= r < done + n}
        if hits:
            values = name_col.to_pylist()
            for i, c in hits.items():
                values[i] = c
            name_col = pa.array(values, pa.string())
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.repeat(np.arange(next_person, next_person + m, dtype=np.int64), k)),
                pc.take(ids, take),
                name_col,
                pc.take(pa.array(SEXES), pa.array(np.repeat(male.astype(np.int64), k))),
                pa.array(np.repeat(age, k)),
                pc.take(pa.array([d for _, d in DISTRICTS]), pa.array(np.repeat(district, k))),
                pa.array(np.repeat(income, k)),
                pc.take(pa.array(BENEFIT_TYPES), pa.array(benefit)),
                pa.array(amount),
                pa.array(visits),
                pa.array(record_date.astype("datetime64[D]"), pa.date32()),
            ],
            schema=schema,
        )
        done += n
        next_person += m


def demo_meta(max_rows_per_person: int = 5) -> dict[str, Any]:
    """The complete META.yaml of the demo table (every catalog field filled in)."""
    return {
        "name": "居民社会救助记录（合成演示数据）",
        "summary": "每行一条社会救助记录：救助对象的身份、人口学属性、收入与救助类型、金额、"
        "走访次数。全部为合成数据，仅供演示与测试。",
        "format": "table",
        "industry_class": "S 公共管理、社会保障和社会组织 / 社会保障",
        "time_coverage": {"start": f"{REFERENCE_YEAR}-01-01", "end": f"{REFERENCE_YEAR}-12-31"},
        "region_coverage": "长沙市（演示）",
        "update_frequency": "monthly",
        "provider": {"name": "市民政局（演示）", "code": "DEMO-430100-MZJ"},
        "share": {"type": "conditional", "conditions": "仅向承担社会救助职能的部门共享"},
        "open": {"type": "conditional", "conditions": "仅在授权运营域内按授权场景使用"},
        "authorized_operation": {"status": "authorized", "scenarios": ["demo-social-benefit"]},
        "desensitized": False,
        "grade": "L4",
        "kind": "public",
        "privacy_unit": "person_id",
        "max_rows_per_unit": max_rows_per_person,
        "columns": [
            {
                "name": "person_id",
                "type": "int",
                "grade": "L3",
                "role": "identifier",
                "label": "救助对象编号",
                "nullable": False,
            },
            {
                "name": "id_number",
                "type": "string",
                "grade": "L4",
                "role": "identifier",
                "label": "身份证号",
            },
            {
                "name": "name",
                "type": "string",
                "grade": "L4",
                "role": "identifier",
                "label": "姓名",
            },
            {
                "name": "sex",
                "type": "string",
                "grade": "L2",
                "role": "quasi_identifier",
                "label": "性别",
                "domain": list(SEXES),
            },
            {
                "name": "age",
                "type": "int",
                "grade": "L2",
                "role": "quasi_identifier",
                "label": "年龄",
                "bounds": [0, 100],
            },
            {
                "name": "district",
                "type": "string",
                "grade": "L2",
                "role": "quasi_identifier",
                "label": "所属区县",
                "domain": [d for _, d in DISTRICTS],
            },
            {
                "name": "income",
                "type": "float",
                "grade": "L3",
                "role": "sensitive",
                "label": "家庭年收入（元）",
                "bounds": [0, INCOME_MAX_YUAN],
            },
            {
                "name": "benefit_type",
                "type": "string",
                "grade": "L3",
                "role": "sensitive",
                "label": "救助类型",
                "domain": list(BENEFIT_TYPES),
            },
            {
                "name": "benefit_amount",
                "type": "float",
                "grade": "L3",
                "role": "sensitive",
                "label": "救助金额（元）",
                "bounds": [0, BENEFIT_AMOUNT_MAX_YUAN],
            },
            {
                "name": "visits",
                "type": "int",
                "grade": "L2",
                "role": "attribute",
                "label": "走访次数",
                "bounds": [0, VISITS_MAX],
            },
            {
                "name": "record_date",
                "type": "date",
                "grade": "L1",
                "role": "attribute",
                "label": "记录日期",
            },
        ],
    }


@dataclass(frozen=True)
class DemoFiles:
    data_path: Path
    meta_path: Path
    rows: int


def write_demo_data(
    out_dir: Path,
    rows: int,
    *,
    fmt: Literal["parquet", "csv"] = "parquet",
    seed: int = 0,
    max_rows_per_person: int = 5,
    canaries: Sequence[str] = (),
    batch_rows: int = 500_000,
    stem: str = "residents",
) -> DemoFiles:
    """Write ``<stem>.parquet`` (or ``.csv``) and ``<stem>.META.yaml`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{stem}.{fmt}"
    meta_path = out_dir / f"{stem}.META.yaml"
    batches = demo_batches(
        rows,
        seed=seed,
        max_rows_per_person=max_rows_per_person,
        canaries=canaries,
        batch_rows=batch_rows,
    )
    written = 0
    if fmt == "parquet":
        with pq.ParquetWriter(data_path, demo_schema(), compression="zstd") as writer:
            for b in batches:
                writer.write_batch(b)
                written += b.num_rows
    elif fmt == "csv":
        with pacsv.CSVWriter(data_path, demo_schema()) as csv_writer:
            for b in batches:
                csv_writer.write_batch(b)
                written += b.num_rows
    else:
        raise ValueError(f"unknown format {fmt!r}; use parquet or csv")
    meta_path.write_text(
        "# META.yaml of the synthetic demo table; see docs/datasets.md for every field.\n"
        + yaml.safe_dump(demo_meta(max_rows_per_person), allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return DemoFiles(data_path, meta_path, written)
