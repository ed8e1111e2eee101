"""The data dictionary and sharing catalogue: generated from the model, the contracts and the policy."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from publish.catalogue import (
    COLUMN_ALIASES,
    HTML_NAME,
    MARKDOWN_NAME,
    ROLE_LABELS,
    TABLE_SOURCES,
    Catalogue,
    CatalogueError,
    ColumnEntry,
    build_catalogue,
    escape_html,
    escape_markdown_cell,
    render_html,
    render_markdown,
    write_catalogue,
)
from schemas.unified import published_tables


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return build_catalogue()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("hub") / "catalogue"
    paths = write_catalogue(folder)
    assert paths == [folder / MARKDOWN_NAME, folder / HTML_NAME]
    return folder, paths[0].read_text(encoding="utf-8"), paths[1].read_text(encoding="utf-8")


def _md_section(markdown: str, fullname: str) -> str:
    start = markdown.index(f"\n### {fullname} ")
    end = markdown.find("\n### ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


def _html_section(page: str, fullname: str) -> str:
    start = page.index(f'<section id="{fullname.replace(".", "-")}">')
    return page[start : page.index("</section>", start)]


def _column(cat: Catalogue, fullname: str, column: str) -> ColumnEntry:
    entry = next(t for t in cat.tables if t.fullname == fullname)
    return next(c for c in entry.columns if c.name == column)


def test_files_are_private(written: tuple[Path, str, str]) -> None:
    folder = written[0]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (MARKDOWN_NAME, HTML_NAME):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600


def test_every_table_and_column_appears_with_its_label_in_both_files(written: tuple[Path, str, str]) -> None:
    _, markdown, page = written
    tables = published_tables()
    assert len(tables) == 23
    for t in tables:
        md, hp = _md_section(markdown, t.fullname), _html_section(page, t.fullname)
        assert f"### {t.fullname} {t.comment}" in md
        assert f"<h3>{t.fullname} {escape_html(t.comment)}</h3>" in hp
        for c in t.columns:
            assert re.search(rf"^\| `{c.name}` \| {re.escape(escape_markdown_cell(c.comment))} \|", md, re.M), (
                t.fullname,
                c.name,
            )
            assert f"<td><code>{c.name}</code></td><td>{escape_html(c.comment)}</td>" in hp, (t.fullname, c.name)
        # and the index links to it
        assert f"](#{t.fullname.replace('.', '-')})" in markdown
        assert f'<a href="#{t.fullname.replace(".", "-")}">' in page


def test_tier_sharing_readers_and_row_security_per_table(written: tuple[Path, str, str]) -> None:
    _, markdown, page = written
    corrections = _md_section(markdown, "sensitive.community_correction")
    assert "| 隐私分层 | 敏感层（sensitive） |" in corrections
    assert "| 共享类型 | 不予共享 |" in corrections
    assert "hub_corrections_reader 社区矫正查阅" in corrections
    assert "hub_platform" not in corrections
    person = _md_section(markdown, "core.person")
    assert "| 隐私分层 | 核心层（core） |" in person and "| 共享类型 | 有条件共享 |" in person
    assert "hub_platform 社区平台" in person and "hub_front_desk 前台" in person
    assert "按社区平台行级安全过滤" in person
    resident = _md_section(markdown, "release.resident")
    assert "| 共享类型 | 无条件共享 |" in resident and "hub_statistics 统计" in resident
    assert "| 行级安全 | 无（按表授权） |" in resident
    html_corrections = _html_section(page, "sensitive.community_correction")
    assert "<dt>共享类型</dt><dd>不予共享</dd>" in html_corrections
    assert "<dt>隐私分层</dt><dd>敏感层（sensitive）</dd>" in html_corrections


def test_a_contract_fed_column_shows_department_dataset_field_and_treatment(
    catalogue: Catalogue, written: tuple[Path, str, str]
) -> None:
    status = _column(catalogue, "core.hukou_registration", "status")
    assert [(s.department_label, s.dataset, s.field_label, s.field_name) for s in status.sources] == [
        ("公安", "gongan.hukou", "户籍状态", "status")
    ]
    assert status.treatments == ["keep 保留原值"]
    row = next(
        line
        for line in _md_section(written[1], "core.hukou_registration").splitlines()
        if line.startswith("| `status`")
    )
    assert "公安 gongan.hukou（户籍人口）· 户籍状态 status" in row and "keep" in row
    assert "公安 gongan.hukou（户籍人口）· 户籍状态 status" in _html_section(written[2], "core.hukou_registration")


@pytest.mark.parametrize(
    ("table", "column", "datasets", "treatment"),
    [
        ("core.hukou_registration", "household_key", ["gongan.hukou"], "fpe(household) 保形加密（FF1）"),
        ("core.hukou_registration", "record_key", ["gongan.hukou"], "keep 保留原值"),
        ("core.migrant_registration", "origin_province", ["gongan.migrant"], "generalise(province) 泛化"),
        ("core.dibao_membership", "dibao_household_key", ["minzheng.dibao"], "fpe(dibao_household) 保形加密（FF1）"),
        (
            "core.person",
            "birth_year",
            ["canlian.disability", "gongan.hukou", "gongan.migrant", "minzheng.relief"],
            "generalise(year) 泛化",
        ),
        (
            "core.person",
            "phone_masked",
            ["canlian.disability", "gongan.hukou", "gongan.migrant", "renshe.employment"],
            "mask(phone) 掩码显示",
        ),
        ("core.birth_registration", "child_birth_year", ["jisheng.births"], "generalise(year) 泛化"),
        ("sensitive.disability_certificate", "category", ["canlian.disability"], "keep 保留原值"),
        (
            "sensitive.disability_certificate",
            "record_key",
            ["canlian.disability"],
            "fpe(disability_certificate) 保形加密（FF1）",
        ),
        ("sensitive.family_planning", "family_type", ["jisheng.births"], "keep 保留原值"),
        (
            "sensitive.community_correction",
            "correction_type_enc",
            ["sifa.corrections"],
            "encrypt(corrections) 确定性加密（AES-SIV，经授权可查看）；发布时另行随机化认证加密",
        ),
        ("release.disability", "category", ["canlian.disability"], "keep 保留原值"),
        ("release.social_assistance", "programme", ["minzheng.relief", "minzheng.dibao"], "keep 保留原值"),
    ],
)
def test_renamed_columns_find_their_sources(
    catalogue: Catalogue, table: str, column: str, datasets: list[str], treatment: str
) -> None:
    entry = _column(catalogue, table, column)
    assert [s.dataset for s in entry.sources] == datasets
    assert entry.treatments == [treatment]


def test_sensitive_contact_takes_every_dataset_that_carries_a_name(catalogue: Catalogue) -> None:
    name_enc = _column(catalogue, "sensitive.person_contact", "name_enc")
    assert len(name_enc.sources) == 9
    assert ("计生", "母亲姓名") in {(s.department_label, s.field_label) for s in name_enc.sources}


def test_platform_columns_have_no_source(catalogue: Catalogue) -> None:
    for table, column in [("core.person", "person_key"), ("core.person", "county_code"), ("core.change_log", "seq")]:
        assert _column(catalogue, table, column).sources == ()


def test_unpublished_contract_fields_are_listed(catalogue: Catalogue, written: tuple[Path, str, str]) -> None:
    assert {(u.contract.dataset, u.field.name) for u in catalogue.unpublished} == {
        ("gongan.hukou", "address"),
        ("gongan.migrant", "address"),
        ("renshe.employment", "employer"),
    }
    tail = written[1][written[1].index("## 未发布的来源字段") :]
    assert "| `renshe.employment` | `employer` | 工作单位 | `employment_registration.employer` | drop 不发布 |" in tail


def test_hand_kept_tables_name_real_tables_columns_and_roles() -> None:
    names = {t.fullname for t in published_tables()}
    columns = {c.name for t in published_tables() for c in t.columns}
    assert set(TABLE_SOURCES) <= names
    for targets in COLUMN_ALIASES.values():
        assert set(targets) <= columns
    assert {r for t in published_tables() for r in t.info["readers"]} <= set(ROLE_LABELS)


def test_escaping_helpers() -> None:
    assert escape_html('<b class="x">&\'') == "&lt;b class=&quot;x&quot;&gt;&amp;&#x27;"
    assert escape_markdown_cell("a|b\nc<d>&") == "a\\|b c&lt;d&gt;&amp;"
    assert escape_markdown_cell("x\\|y") == "x\\\\\\|y"


def test_labels_with_markup_are_escaped_in_both_renderings() -> None:
    t = sa.Table(
        "odd",
        sa.MetaData(),
        sa.Column("age", sa.Integer, primary_key=True, comment="年龄<18|儿童"),
        schema="core",
        comment="<script>alert(1)</script>",
        info={"tier": "core", "sharing": "无条件共享", "readers": ("hub_front_desk",), "purpose": "测试"},
    )
    cat = build_catalogue(tables=[t])
    page, markdown = render_html(cat), render_markdown(cat)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "年龄&lt;18|儿童" in page
    assert "| `age` | 年龄&lt;18\\|儿童 | INTEGER | 否 | 是 |" in markdown


def test_a_table_without_catalogue_info_is_named() -> None:
    t = sa.Table("bare", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema="core")
    with pytest.raises(CatalogueError, match=r"core\.bare: info has no tier, sharing, readers, purpose"):
        build_catalogue(tables=[t])


def test_html_is_self_contained_and_output_is_deterministic(
    catalogue: Catalogue, written: tuple[Path, str, str]
) -> None:
    page = written[2]
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert render_html(build_catalogue()) == page
    assert render_markdown(catalogue) == written[1]
