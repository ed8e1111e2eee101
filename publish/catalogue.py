"""The data dictionary and sharing catalogue (政务信息资源目录, 国发〔2016〕51号) of the published database.

Nothing here is written by hand twice: tables, columns, Chinese labels, privacy tiers, sharing types, readers
and purposes come from the model (``schemas.unified``); which department's field feeds a column comes from
the contracts; how that field was treated comes from the privacy policy. The only hand-kept facts are the
short tables below that say which contract table feeds a published table and which published column a
contract column became where the names differ (they mirror ``publish.build``), plus the roles' descriptions.

The output is deterministic (no timestamp), so regenerating it after no change gives the same files.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from privacy.policy import Policy, Rule, load_policy
from publish.publisher import SEALED
from schemas.base import HubError, private_dir, write_atomic
from schemas.contract import Contract, ContractField, packaged_contracts
from schemas.unified import (
    BACK_OFFICE,
    CONDITIONAL,
    CORRECTIONS_READER,
    FRONT_DESK,
    JUSTICE,
    NOT_SHARED,
    PLATFORMS,
    PRIVACY_OFFICER,
    STATISTICS,
    TIERS,
    UNCONDITIONAL,
    published_tables,
)

MARKDOWN_NAME = "catalogue.md"
HTML_NAME = "catalogue.html"
TITLE = "统一社区数据库 数据字典与共享目录"
#: shown where no contract field feeds a column (keys, hashes, values the hub derives)
NO_SOURCE = "平台生成或派生"

TIER_LABELS = {
    "core": "核心层（core）",
    "sensitive": "敏感层（sensitive）",
    "release": "发布层（release）",
}
TIER_NOTES = {
    "core": "业务电子档案，以稳定人员键关联（不发布身份证号令牌）；姓名、证件号、电话只发布掩码；"
    "按社区平台的行级安全过滤。",
    "sensitive": "残疾、计划生育家庭类别、社区矫正以及姓名电话密文等敏感个人信息；按用途授权读取；"
    "无人需要比对的值以随机化认证加密存放，仅经授权、说明理由并记入审计日志后可查看。",
    "release": "泛化的统计微数据：每个数据使用方一个独立令牌域（不可跨方关联），小组抑制；"
    "低于 k-匿名阈值或 l-多样性要求的发布将被拒绝。",
}
# 《政务信息资源共享管理暂行办法》（国发〔2016〕51号）第九条
SHARING_NOTES = {
    UNCONDITIONAL: "可提供给所有政务部门共享使用。",
    CONDITIONAL: "可提供给相关政务部门共享使用，或仅能够部分提供给所有政务部门共享使用。",
    NOT_SHARED: "不宜提供给其他政务部门共享使用（本平台仅限法定职责所需的指定角色）。",
}
ROLE_LABELS = {
    PLATFORMS: "社区平台（各社区平台角色所属的组）",
    FRONT_DESK: "前台（一口受理）",
    BACK_OFFICE: "后台（协同办理）",
    PRIVACY_OFFICER: "隐私保护负责人（个人信息保护负责人）",
    JUSTICE: "司法",
    STATISTICS: "统计",
    CORRECTIONS_READER: "社区矫正查阅（司法及经授权的后台人员）",
}
TREATMENT_LABELS = {
    "keep": "保留原值",
    "drop": "不发布",
    "token": "令牌化（HMAC-SHA256）",
    "encrypt": "确定性加密（AES-SIV，经授权可查看）",
    "fpe": "保形加密（FF1）",
    "mask": "掩码显示",
    "generalise": "泛化",
}

#: published table -> the contract (unified) tables whose fields feed it, where it is not its own name
TABLE_SOURCES: dict[str, tuple[str, ...]] = {
    "core.household": ("hukou_registration",),
    "core.household_member": ("hukou_registration",),
    "core.dibao_household": ("dibao_membership",),
    "sensitive.family_planning": ("birth_registration",),
    "sensitive.person_contact": ("person",),
    "release.resident": ("person",),
    "release.disability": ("person", "disability_certificate"),
    "release.social_assistance": ("person", "social_relief", "dibao_membership"),
}
#: contract (unified) column -> the published column(s) it becomes where the name differs (see publish.build);
#: policy renames (``column:``) and display forms (``<column>_masked``) are read from the policy instead
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "record_id": ("record_key",),
    "household_no": ("household_key",),
    "household_id": ("dibao_household_key",),
    "origin_area": ("origin_province",),
    "monthly_amount": ("monthly_total",),  # core.dibao_household sums its members'
    "birth_date": ("age_band",),  # release: five-year bands
    "category": ("programme",),  # release.social_assistance: 特困供养/高龄津贴/孤儿 from the relief category
    "status": ("programme",),  # ... and 低保 from a dibao membership's status
}


class CatalogueError(HubError):
    """The model or the contracts cannot be catalogued (the message names the table or field)."""


@dataclass(frozen=True)
class Source:
    """One contract field that feeds a published column, and how the policy treated it."""

    department_label: str
    dataset: str
    title: str
    field_name: str
    field_label: str
    treatment: str

    @property
    def text(self) -> str:
        """One line: 部门 数据集（标题）· 源字段名称 field."""
        return f"{self.department_label} {self.dataset}（{self.title}）· {self.field_label} {self.field_name}"


@dataclass(frozen=True)
class ColumnEntry:
    """A published column as the dictionary shows it."""

    name: str
    label: str
    type: str
    nullable: bool
    primary_key: bool
    sources: tuple[Source, ...]

    @property
    def treatments(self) -> list[str]:
        """The distinct privacy treatments of its sources, in source order."""
        return list(dict.fromkeys(s.treatment for s in self.sources))


@dataclass(frozen=True)
class TableEntry:
    """A published table as the catalogue shows it."""

    fullname: str
    label: str
    tier: str
    sharing: str
    readers: tuple[str, ...]
    row_security: str
    purpose: str
    columns: tuple[ColumnEntry, ...]

    @property
    def anchor(self) -> str:
        """An HTML id for links from the index."""
        return self.fullname.replace(".", "-")


@dataclass(frozen=True)
class Unpublished:
    """A contract field that feeds no published column (kept for linkage, generalised away, or dropped)."""

    contract: Contract
    field: ContractField
    treatment: str


@dataclass(frozen=True)
class Catalogue:
    """Everything both renderings show."""

    tables: tuple[TableEntry, ...]
    contracts: tuple[Contract, ...]
    unpublished: tuple[Unpublished, ...]
    policy_version: int
    threshold_k: int


# ----------------------------------------------------------------------------------------------- building
def describe_treatment(rule: Rule | None, column: str) -> str:
    """The treatment that produced ``column`` from a field: its display mask for ``*_masked``, else the main one."""
    if rule is None:
        return "未覆盖（不发布）"
    treatment = rule.display if column.endswith("_masked") and rule.display is not None else rule.treatment
    label = TREATMENT_LABELS.get(treatment.kind, treatment.kind)
    return f"{treatment} {label}"


def _published_names(contract_field: ContractField, rule: Rule | None) -> set[str]:
    """The published columns a contract field may become: its policy output columns plus the known renames."""
    column = contract_field.unified_column
    names = {column, *COLUMN_ALIASES.get(column, ())}
    if rule is not None and rule.treatment.kind != "drop":
        names |= set(rule.output_columns(column))
    return names


def _type(column: sa.Column[object]) -> str:
    """The PostgreSQL type (the database of record), without the byte-order collation of key columns."""
    return str(column.type.compile(dialect=postgresql.dialect())).replace(' COLLATE "C"', "")


def _row_security(t: sa.Table) -> str:
    """What row-level security does on a table (mirrors migration 0003)."""
    if t.schema == "release" or "community_code" not in t.c:
        return "无（按表授权）"
    if t.fullname == "core.consumer_scope":
        return "每个角色只能读到本角色的范围行"
    note = "按社区平台行级安全过滤：仅可读 core.consumer_scope 为本角色所列社区（社区代码、县级区划代码或 *）的行"
    if t.fullname == "core.change_log":
        note += "；无社区代码的行对所有读者可见"
    return note


def _info(t: sa.Table) -> dict[str, object]:
    """A table's catalogue facts, or an error naming the table and every missing key."""
    missing = [k for k in ("tier", "sharing", "readers", "purpose") if k not in t.info]
    if missing:
        raise CatalogueError(f"table {t.fullname}: info has no {', '.join(missing)} (see schemas.unified._info)")
    return dict(t.info)


def _sources_by_table(
    contracts: Iterable[Contract], policy: Policy
) -> dict[str, list[tuple[Contract, ContractField, Rule | None]]]:
    out: dict[str, list[tuple[Contract, ContractField, Rule | None]]] = {}
    for contract in contracts:
        for f in contract.fields:
            out.setdefault(f.unified_table, []).append((contract, f, policy.rule_for(contract, f)))
    return out


def build_catalogue(
    tables: Sequence[sa.Table] | None = None,
    contracts: Mapping[str, Contract] | None = None,
    policy: Policy | None = None,
) -> Catalogue:
    """Assemble the catalogue from the model, the contracts and the policy (defaults: the packaged ones)."""
    tables = list(tables) if tables is not None else [t for tier in TIERS for t in published_tables(tier)]
    contracts = contracts if contracts is not None else packaged_contracts()
    policy = policy if policy is not None else load_policy()
    by_table = _sources_by_table(contracts.values(), policy)
    fed: set[tuple[str, str]] = set()
    entries = []
    for t in tables:
        sealed = SEALED.get(t.fullname, {})
        candidates = [s for u in TABLE_SOURCES.get(t.fullname, (t.name,)) for s in by_table.get(u, [])]
        columns = []
        for c in t.columns:
            sources = []
            for contract, f, rule in candidates:
                hit = sealed[c.name] == f.unified if c.name in sealed else c.name in _published_names(f, rule)
                if not hit:
                    continue
                treatment = describe_treatment(rule, c.name)
                if c.name in sealed:
                    treatment += "；发布时另行随机化认证加密"
                sources.append(
                    Source(contract.department_label, contract.dataset, contract.title, f.name, f.label, treatment)
                )
                fed.add((contract.dataset, f.name))
            columns.append(
                ColumnEntry(
                    name=c.name,
                    label=str(c.comment or ""),
                    type=_type(c),
                    nullable=bool(c.nullable),
                    primary_key=bool(c.primary_key),
                    sources=tuple(sources),
                )
            )
        info = _info(t)
        readers = info["readers"]
        entries.append(
            TableEntry(
                fullname=t.fullname,
                label=str(t.comment or ""),
                tier=str(info["tier"]),
                sharing=str(info["sharing"]),
                readers=tuple(str(r) for r in readers) if isinstance(readers, Iterable) else (),
                row_security=_row_security(t),
                purpose=str(info["purpose"]),
                columns=tuple(columns),
            )
        )
    unpublished = tuple(
        Unpublished(contract, f, describe_treatment(policy.rule_for(contract, f), f.unified_column))
        for contract in contracts.values()
        for f in contract.fields
        if (contract.dataset, f.name) not in fed
    )
    return Catalogue(
        tables=tuple(entries),
        contracts=tuple(sorted(contracts.values(), key=lambda c: c.dataset)),
        unpublished=unpublished,
        policy_version=policy.version,
        threshold_k=policy.threshold_k,
    )


def role_text(role: str) -> str:
    """A role name with its Chinese description."""
    return f"{role} {ROLE_LABELS[role]}" if role in ROLE_LABELS else role


# ----------------------------------------------------------------------------------------------- rendering
def escape_html(text: object) -> str:
    """Text safe inside HTML elements and attribute values."""
    return html.escape(str(text), quote=True)


def escape_markdown_cell(text: object) -> str:
    """Text safe inside a Markdown table cell: no raw HTML, no cell-breaking pipes or newlines."""
    escaped = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(escaped.splitlines())


def _yes(flag: bool) -> str:
    return "是" if flag else "否"


_INTRO = (
    "本目录由发布模型（schemas/unified.py）、源数据契约（schemas/contracts/）和隐私策略（privacy/policy.yaml）"
    "自动生成，请勿手工修改；重新生成：`hub db catalogue [--out DIR]`。字段类型为 PostgreSQL 类型。"
)


def render_markdown(cat: Catalogue) -> str:
    """The catalogue as Markdown (GitHub tables; cell text escaped)."""
    e = escape_markdown_cell
    lines = [f"# {TITLE}", "", _INTRO, "", f"隐私策略版本：{cat.policy_version}；k-匿名阈值：{cat.threshold_k}。", ""]
    lines += ["## 隐私分层", "", "| 分层 | 说明 |", "|---|---|"]
    lines += [f"| {e(TIER_LABELS[tier])} | {e(TIER_NOTES[tier])} |" for tier in TIERS]
    lines += ["", "## 共享类型（国发〔2016〕51号）", "", "| 共享类型 | 含义 |", "|---|---|"]
    lines += [f"| {e(kind)} | {e(note)} |" for kind, note in SHARING_NOTES.items()]
    lines += ["", "## 角色", "", "| 角色 | 说明 |", "|---|---|"]
    lines += [f"| `{e(role)}` | {e(label)} |" for role, label in ROLE_LABELS.items()]
    lines += ["", "## 目录", ""]
    for tier in TIERS:
        lines.append(f"- {TIER_LABELS[tier]}")
        lines += [
            f"  - [{t.fullname} {e(t.label)}](#{t.anchor})（{e(t.sharing)}）" for t in cat.tables if t.tier == tier
        ]
    lines += ["", "## 来源数据集", "", "| 数据集 | 部门 | 名称 | 契约共享类型 | 字段数 |", "|---|---|---|---|---|"]
    lines += [
        f"| `{c.dataset}` | {e(c.department_label)} | {e(c.title)} | {e(c.sharing_type)} | {len(c.fields)} |"
        for c in cat.contracts
    ]
    for tier in TIERS:
        lines += ["", f"## {TIER_LABELS[tier]}", "", TIER_NOTES[tier]]
        for t in (t for t in cat.tables if t.tier == tier):
            lines += ["", f'<a id="{t.anchor}"></a>', "", f"### {t.fullname} {e(t.label)}", ""]
            lines += ["| 项目 | 内容 |", "|---|---|"]
            lines += [
                f"| 表 | `{t.fullname}` |",
                f"| 中文名称 | {e(t.label)} |",
                f"| 隐私分层 | {e(TIER_LABELS.get(t.tier, t.tier))} |",
                f"| 共享类型 | {e(t.sharing)} |",
                f"| 可读角色 | {'<br>'.join(e(role_text(r)) for r in t.readers)} |",
                f"| 行级安全 | {e(t.row_security)} |",
                f"| 用途 | {e(t.purpose)} |",
                "",
                "| 列名 | 中文名称 | 类型 | 可空 | 主键 | 来源（部门 数据集 · 源字段） | 隐私处理 |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in t.columns:
                sources = "<br>".join(e(s.text) for s in c.sources) or NO_SOURCE
                treatments = "<br>".join(e(x) for x in c.treatments) or "—"
                lines.append(
                    f"| `{c.name}` | {e(c.label)} | {e(c.type)} | {_yes(c.nullable)} | {_yes(c.primary_key)} "
                    f"| {sources} | {treatments} |"
                )
    lines += ["", "## 未发布的来源字段", "", "以下契约字段不进入任何发布列（仅用于内部关联、已泛化或被策略删除）。", ""]
    lines += ["| 数据集 | 字段 | 中文名称 | 统一模型 | 隐私处理 |", "|---|---|---|---|---|"]
    lines += [
        f"| `{u.contract.dataset}` | `{u.field.name}` | {e(u.field.label)} | `{u.field.unified}` | {e(u.treatment)} |"
        for u in cat.unpublished
    ]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222;line-height:1.5}
h1{border-bottom:2px solid #8b0000}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3}code{background:#f6f6f6;padding:0 3px}
dl.meta{display:grid;grid-template-columns:8em 1fr;gap:2px 1em}dl.meta dt{font-weight:bold}dl.meta dd{margin:0}
.tier-core{color:#1a5}.tier-sensitive{color:#b30}.tier-release{color:#15a}
""".strip()


def render_html(cat: Catalogue) -> str:
    """The catalogue as one self-contained HTML page (inline CSS, no script; all text escaped)."""
    e = escape_html

    def rows(pairs: Iterable[tuple[str, str]]) -> str:
        return "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in pairs)

    out = [
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">',
        f"<title>{e(TITLE)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>",
        f"<h1>{e(TITLE)}</h1>",
        f"<p>{e(_INTRO.replace('`', ''))}</p>",
        f"<p>隐私策略版本：{e(cat.policy_version)}；k-匿名阈值：{e(cat.threshold_k)}。</p>",
        "<h2>隐私分层</h2><table><tr><th>分层</th><th>说明</th></tr>",
        rows((TIER_LABELS[tier], TIER_NOTES[tier]) for tier in TIERS),
        "</table><h2>共享类型（国发〔2016〕51号）</h2><table><tr><th>共享类型</th><th>含义</th></tr>",
        rows(SHARING_NOTES.items()),
        "</table><h2>角色</h2><table><tr><th>角色</th><th>说明</th></tr>",
        rows(ROLE_LABELS.items()),
        '</table><h2 id="index">目录</h2><ul>',
    ]
    for tier in TIERS:
        items = "".join(
            f'<li><a href="#{e(t.anchor)}">{e(t.fullname)} {e(t.label)}</a>（{e(t.sharing)}）</li>'
            for t in cat.tables
            if t.tier == tier
        )
        out.append(f"<li>{e(TIER_LABELS[tier])}<ul>{items}</ul></li>")
    out.append("</ul><h2>来源数据集</h2><table><tr><th>数据集</th><th>部门</th><th>名称</th>")
    out.append("<th>契约共享类型</th><th>字段数</th></tr>")
    out += [
        f"<tr><td><code>{e(c.dataset)}</code></td><td>{e(c.department_label)}</td><td>{e(c.title)}</td>"
        f"<td>{e(c.sharing_type)}</td><td>{len(c.fields)}</td></tr>"
        for c in cat.contracts
    ]
    out.append("</table>")
    for tier in TIERS:
        out.append(f'<h2 class="tier-{e(tier)}">{e(TIER_LABELS[tier])}</h2><p>{e(TIER_NOTES[tier])}</p>')
        for t in (t for t in cat.tables if t.tier == tier):
            readers = "<br>".join(e(role_text(r)) for r in t.readers)
            out.append(
                f'<section id="{e(t.anchor)}"><h3>{e(t.fullname)} {e(t.label)}</h3><dl class="meta">'
                f"<dt>表</dt><dd><code>{e(t.fullname)}</code></dd><dt>中文名称</dt><dd>{e(t.label)}</dd>"
                f"<dt>隐私分层</dt><dd>{e(TIER_LABELS.get(t.tier, t.tier))}</dd>"
                f"<dt>共享类型</dt><dd>{e(t.sharing)}</dd><dt>可读角色</dt><dd>{readers}</dd>"
                f"<dt>行级安全</dt><dd>{e(t.row_security)}</dd><dt>用途</dt><dd>{e(t.purpose)}</dd></dl>"
                "<table><tr><th>列名</th><th>中文名称</th><th>类型</th><th>可空</th><th>主键</th>"
                "<th>来源（部门 数据集 · 源字段）</th><th>隐私处理</th></tr>"
            )
            for c in t.columns:
                sources = "<br>".join(e(s.text) for s in c.sources) or NO_SOURCE
                treatments = "<br>".join(e(x) for x in c.treatments) or "—"
                out.append(
                    f"<tr><td><code>{e(c.name)}</code></td><td>{e(c.label)}</td><td>{e(c.type)}</td>"
                    f"<td>{_yes(c.nullable)}</td><td>{_yes(c.primary_key)}</td><td>{sources}</td>"
                    f"<td>{treatments}</td></tr>"
                )
            out.append('</table><p><a href="#index">返回目录</a></p></section>')
    out.append("<h2>未发布的来源字段</h2><p>以下契约字段不进入任何发布列（仅用于内部关联、已泛化或被策略删除）。</p>")
    out.append("<table><tr><th>数据集</th><th>字段</th><th>中文名称</th><th>统一模型</th><th>隐私处理</th></tr>")
    out += [
        f"<tr><td><code>{e(u.contract.dataset)}</code></td><td><code>{e(u.field.name)}</code></td>"
        f"<td>{e(u.field.label)}</td><td><code>{e(u.field.unified)}</code></td><td>{e(u.treatment)}</td></tr>"
        for u in cat.unpublished
    ]
    out.append("</table>\n</body>\n</html>\n")
    return "\n".join(out)


def write_catalogue(folder: Path) -> list[Path]:
    """Write ``catalogue.md`` and ``catalogue.html`` (0600) into ``folder`` (made 0700); return their paths."""
    folder = private_dir(folder)
    cat = build_catalogue()
    return [
        write_atomic(folder / MARKDOWN_NAME, render_markdown(cat)),
        write_atomic(folder / HTML_NAME, render_html(cat)),
    ]
