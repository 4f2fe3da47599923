"""Every label of the reviewer console, in Chinese and English, in one dict.

Templates call ``t("key")``; a key missing in one language falls back to English and then
to the key itself, and ``tests/shuyu/test_console.py`` checks both languages have every key.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LABELS", "LANGS", "Lang", "translate"]

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")

LABELS: dict[str, dict[Lang, str]] = {
    "app.title": {"zh": "数域 · 安全审查台", "en": "shuyu · review console"},
    "app.tagline": {
        "zh": "原始数据不出域 · 数据可用不可见",
        "en": "Raw data never leaves the domain · usable, never visible",
    },
    "nav.queue": {"zh": "待审队列", "en": "Review queue"},
    "nav.releases": {"zh": "已发布成果", "en": "Releases"},
    "nav.audit": {"zh": "审计日志", "en": "Audit trail"},
    "nav.budgets": {"zh": "隐私预算", "en": "Privacy budgets"},
    "nav.logout": {"zh": "退出", "en": "Log out"},
    "nav.lang_other": {"zh": "English", "en": "中文"},
    "login.title": {"zh": "登录", "en": "Log in"},
    "login.token": {"zh": "访问令牌", "en": "API token"},
    "login.help": {
        "zh": "请输入数据主管部门签发的令牌。令牌仅保存在本浏览器的 HttpOnly Cookie 中。",
        "en": "Enter the token the authority issued you. It is kept only in an HttpOnly "
        "cookie in this browser.",
    },
    "login.submit": {"zh": "登录", "en": "Log in"},
    "login.failed": {"zh": "登录失败", "en": "Login failed"},
    "login.role": {
        "zh": "审查台仅对安全审查员、审计人员和数据主管部门开放。",
        "en": "The console is for reviewers, auditors and the authority.",
    },
    "who.signed_in": {"zh": "当前用户", "en": "Signed in as"},
    "queue.title": {"zh": "待审查的产出", "en": "Outputs waiting for review"},
    "queue.empty": {"zh": "当前没有待审查的产出。", "en": "Nothing is waiting for review."},
    "queue.refresh": {"zh": "每 15 秒自动刷新", "en": "Refreshes every 15 s"},
    "col.job": {"zh": "任务", "en": "Job"},
    "col.scenario": {"zh": "场景", "en": "Scenario"},
    "col.submitter": {"zh": "提交人", "en": "Submitter"},
    "col.mode": {"zh": "产出类型", "en": "Output"},
    "col.findings": {"zh": "检查发现", "en": "Findings"},
    "col.reviews": {"zh": "审查进度", "en": "Reviews"},
    "col.submitted": {"zh": "提交时间", "en": "Submitted"},
    "col.state": {"zh": "状态", "en": "State"},
    "col.release": {"zh": "发布编号", "en": "Release"},
    "col.released_at": {"zh": "发布时间", "en": "Released"},
    "col.files": {"zh": "文件", "en": "Files"},
    "col.seq": {"zh": "序号", "en": "Seq"},
    "col.time": {"zh": "时间", "en": "Time"},
    "col.actor": {"zh": "操作人", "en": "Actor"},
    "col.action": {"zh": "动作", "en": "Action"},
    "col.target": {"zh": "对象", "en": "Target"},
    "col.result": {"zh": "结果", "en": "Result"},
    "col.spent": {"zh": "已用", "en": "Spent"},
    "col.total": {"zh": "总额", "en": "Total"},
    "col.left": {"zh": "剩余", "en": "Left"},
    "review.open": {"zh": "审查", "en": "Review"},
    "review.job": {"zh": "任务与代码", "en": "Job and code"},
    "review.scenario": {"zh": "授权场景", "en": "Authorized scenario"},
    "review.purpose": {"zh": "授权用途", "en": "Authorized purpose"},
    "review.operator": {"zh": "运营机构", "en": "Operator"},
    "review.use_class": {"zh": "使用类别", "en": "Use class"},
    "review.datasets": {"zh": "授权数据", "en": "Authorized data"},
    "review.report": {"zh": "出域检查报告", "en": "Egress report"},
    "review.no_findings": {"zh": "未发现问题。", "en": "No findings."},
    "review.evidence": {"zh": "依据", "en": "Evidence"},
    "review.fix": {"zh": "建议修改", "en": "Suggested fix"},
    "review.output": {"zh": "拟出域结果", "en": "Output to release"},
    "review.chart": {"zh": "图示", "en": "Chart"},
    "review.rows_shown": {"zh": "显示前 {n} 行", "en": "First {n} rows"},
    "review.no_table": {
        "zh": "该产出不是表格（如模型），请依据检查报告审查。",
        "en": "This output is not a table (e.g. a model); review it from the report.",
    },
    "review.questions": {"zh": "安全审查要点（R1.3）", "en": "Security review (R1.3)"},
    "review.comment": {"zh": "审查意见", "en": "Comment"},
    "review.approve": {"zh": "批准出域", "en": "Approve release"},
    "review.reject": {"zh": "驳回", "en": "Reject"},
    "review.state": {"zh": "审查状态", "en": "Review state"},
    "review.needs": {"zh": "需要 {n} 名审查员", "en": "Needs {n} reviewer(s)"},
    "review.done_by": {"zh": "已审查", "en": "Reviewed by"},
    "review.self": {
        "zh": "这是您本人提交的任务，不能由您审查。",
        "en": "You submitted this job, so you cannot review it.",
    },
    "review.readonly": {
        "zh": "您的角色只能查看，不能审查。",
        "en": "Your role may view this output but not review it.",
    },
    "review.own": {"zh": "本人提交", "en": "your job"},
    "review.decided": {"zh": "您的审查已记录。", "en": "Your review is recorded."},
    "answer.ok": {"zh": "无问题", "en": "No concern"},
    "answer.concern": {"zh": "有顾虑", "en": "Concern"},
    "q.beyond_scope": {
        "zh": "(a) 是否超出授权用途和范围使用数据？",
        "en": "(a) Is data used beyond the authorized purpose and scope?",
    },
    "q.direct_exposure": {
        "zh": "(b) 是否存在直接暴露原始、敏感或个人数据的风险？",
        "en": "(b) Is there a risk of directly exposing raw, sensitive or personal data?",
    },
    "q.model_attack": {
        "zh": "(c) 模型和算法是否存在隐私攻击风险？",
        "en": "(c) Are models or algorithms at risk of privacy attacks?",
    },
    "q.other_risk": {
        "zh": "(d) 是否存在其他数据安全风险？",
        "en": "(d) Are there other data-security risks?",
    },
    "severity.block": {"zh": "阻断", "en": "Blocking"},
    "severity.review": {"zh": "需审查", "en": "Needs review"},
    "severity.info": {"zh": "提示", "en": "Info"},
    "releases.title": {"zh": "已发布成果", "en": "Released products"},
    "releases.empty": {"zh": "尚无发布。", "en": "No releases yet."},
    "releases.download": {"zh": "下载", "en": "Download"},
    "audit.title": {"zh": "审计日志", "en": "Audit trail"},
    "audit.verifies": {"zh": "哈希链与签名校验通过", "en": "Hash chain and signatures verify"},
    "audit.broken": {"zh": "审计日志校验失败", "en": "The audit log does NOT verify"},
    "audit.entries": {
        "zh": "{n} 条记录，{c} 个签名检查点",
        "en": "{n} entries, {c} signed checkpoints",
    },
    "audit.verify_now": {"zh": "重新校验", "en": "Verify again"},
    "audit.latest": {"zh": "最近 {n} 条", "en": "Latest {n} entries"},
    "budgets.title": {"zh": "各场景隐私预算（ε）", "en": "Privacy budget per scenario (ε)"},
    "budgets.empty": {"zh": "尚无场景。", "en": "No scenarios yet."},
    "error.title": {"zh": "出错了", "en": "Something went wrong"},
    "error.what_to_do": {"zh": "处理建议", "en": "What to do"},
    "error.request_id": {"zh": "请求编号", "en": "Request id"},
    "error.back": {"zh": "返回", "en": "Back"},
}


def translate(lang: Lang, key: str, **values: object) -> str:
    """The label ``key`` in ``lang`` (English, then the key, as fallbacks), formatted."""
    entry = LABELS.get(key)
    text = (entry.get(lang) or entry.get("en") or key) if entry else key
    return text.format(**values) if values else text
