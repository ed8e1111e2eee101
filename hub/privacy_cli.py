"""`hub privacy` (check, reveal, verify-log, report) and `hub keys` (init, rotate, destroy, list).

Registered in hub/cli.py as "hub.privacy_cli:privacy" and "hub.privacy_cli:keys". `reveal` is the one place
where a plaintext value is printed, and only after the attempt is in the audit log.
"""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa

from hub.settings import Settings
from privacy.audit_log import AuditLogError, verify_log
from privacy.coverage import check_coverage
from privacy.keyring import (
    DEMO_WARNING,
    KEYRING_ENV,
    Keyring,
    KeyringError,
    destroy_key_version,
    init_keyfile,
    rotate_keyfile,
)
from privacy.policy import Policy, PolicyError, load_policy
from schemas.base import HubError
from schemas.contract import Contract, ContractError, load_contracts

_POLICY = click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (default: the packaged privacy/policy.yaml).",
)
_CONTRACTS = click.option(
    "--contracts",
    "contracts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Contracts folder (default: the packaged contracts).",
)
_LOG = click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Audit log (default: <HUB_HOME>/audit/reveal.log); its head is checked in HUB_DATABASE_URL.",
)


def _audit_log(log_path: Path | None) -> tuple[Path, sa.Engine]:
    """The reveal log (default <HUB_HOME>/audit/reveal.log) and the hub database that keeps its head."""
    settings = Settings.from_env()
    return log_path or settings.audit_log, settings.engine()


def _load(policy_path: Path | None, contracts_dir: Path | None = None) -> tuple[Policy, dict[str, Contract]]:
    try:
        policy = load_policy(policy_path)
        contracts = load_contracts(contracts_dir)
    except (PolicyError, ContractError) as exc:
        raise click.ClickException(str(exc)) from None
    return policy, contracts


def _keyring() -> Keyring:
    try:
        return Settings.from_env().load_keyring()
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("privacy")
def privacy() -> None:
    """Privacy policy coverage, audited reveal, the reveal log and the privacy officer's report."""


@privacy.command("check")
@_POLICY
@_CONTRACTS
def check(policy_path: Path | None, contracts_dir: Path | None) -> None:
    """Fail (exit 1) naming every contract field that has no suitable treatment in the policy."""
    policy, contracts = _load(policy_path, contracts_dir)
    result = check_coverage(contracts, policy)
    for key in result.unused_entries:
        click.echo(f"warning: policy entry '{key}' matches no contract field", err=True)
    for f in result.uncovered:
        click.echo(f"UNCOVERED {f.qualified} ({f.label}, {f.privacy}): no treatment in {policy.path}", err=True)
    for f in result.invalid:
        click.echo(f"INVALID {f.qualified} ({f.label}): {f.problem}", err=True)
    if not result.ok:
        raise click.ClickException(
            f"{len(result.uncovered)} uncovered and {len(result.invalid)} invalid field(s) "
            f"in {len(contracts)} contracts"
        )
    click.echo(f"privacy policy v{policy.version} covers all {len(result.fields)} fields of {len(contracts)} contracts")


@privacy.command("reveal")
@click.option("--domain", required=True, help="Key domain of the encrypt treatment, e.g. person_name.")
@click.option("--value", "ciphertext", required=True, help="The ciphertext, e<version>.<base64url>.")
@click.option("--reason", default=None, help="Why this value must be seen (recorded in the audit log).")
@click.option("--operator", default=None, help="Who asks (recorded in the audit log).")
@_POLICY
@_LOG
def reveal_command(
    domain: str,
    ciphertext: str,
    reason: str | None,
    operator: str | None,
    policy_path: Path | None,
    log_path: Path | None,
) -> None:
    """Decrypt one encrypt-treated value; needs --reason and --operator; every attempt is logged."""
    from privacy.reveal import RevealRefused, reveal

    policy, _ = _load(policy_path)
    keyring = _keyring()
    path, engine = _audit_log(log_path)
    try:
        plaintext = reveal(ciphertext, domain, reason, operator, keyring, policy, path, engine)
    except RevealRefused as exc:
        raise click.ClickException(f"reveal {exc} (attempt recorded in the audit log)") from None
    except AuditLogError as exc:
        raise click.ClickException(f"reveal not possible: {exc}") from None
    finally:
        engine.dispose()
    click.echo(plaintext)


@privacy.command("verify-log")
@_LOG
def verify_log_command(log_path: Path | None) -> None:
    """Check the HMAC chain of the audit log and both its heads; exit 1 naming the first broken entry."""
    path, engine = _audit_log(log_path)
    try:
        result = verify_log(path, engine, _keyring())
    finally:
        engine.dispose()
    if not result.ok:
        raise click.ClickException(f"{path}: entry {result.first_broken} is broken: {result.reason}")
    click.echo(f"{path}: {result.entries} entries, chain intact")


@privacy.command("report")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--database-url", default=None, help="Published database to scan for leaks and re-identification risk.")
@click.option(
    "--truth",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Synthetic ground truth (DIR/truth) whose names the leak scan looks for.",
)
@click.option(
    "--k",
    "threshold_k",
    type=click.IntRange(min=2),
    default=None,
    help="k-anonymity threshold (default: the policy's, 5).",
)
@_POLICY
@_CONTRACTS
@_LOG
def report_command(
    out_dir: Path,
    database_url: str | None,
    truth: Path | None,
    threshold_k: int | None,
    policy_path: Path | None,
    contracts_dir: Path | None,
    log_path: Path | None,
) -> None:
    """Write report.json and report.html for the privacy officer."""
    from privacy.report import build_report, load_keyring_for_report, write_report

    policy, contracts = _load(policy_path, contracts_dir)
    settings = Settings.from_env()
    keyring_json = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    keyring, keyring_error = load_keyring_for_report(keyring_json, settings.keyring)
    path, engine = _audit_log(log_path)
    report = build_report(
        policy,
        contracts,
        path,
        keyring,
        keyring_error,
        database_url,
        truth,
        threshold_k,
        audit_engine=engine,
    )
    engine.dispose()
    json_path, html_path = write_report(report, out_dir)
    click.echo(f"wrote {json_path} and {html_path}")
    problems = []
    if not report["coverage"]["ok"]:
        problems.append("policy coverage incomplete")
    if not report["reveal_log"]["chain_ok"]:
        problems.append("reveal log chain broken")
    if report["leak_scan"] and not report["leak_scan"]["clean"]:
        problems.append("plaintext found in the published database")
    failing = [r for r in report["reidentification"]["tables"] if not r["passes"]]
    released = [r for r in failing if r.get("tier") == "release"]
    if released:
        problems.append(f"{len(released)} release-tier table(s) below k or l: the release gate should have refused")
    if len(failing) > len(released):
        k = report["reidentification"]["threshold_k"]
        problems.append(
            f"{len(failing) - len(released)} quasi-identifier set(s) below k={k} outside the release tier"
            " (operational tables: row-level security, never released as they are)"
        )
    for p in problems:
        click.echo(f"attention: {p}", err=True)


# -- keys --------------------------------------------------------------------------------------------------

_PATH = click.option(
    "--path",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keyfile (default: HUB_KEYRING, else var/keys/demo-keyring.json).",
)


def _keyfile(path: Path | None) -> Path:
    settings = Settings.from_env()
    if path is None and settings.keyring_json is not None:
        raise click.ClickException(
            f"the keyring comes from {KEYRING_ENV}: change it in the secrets backend, or pass --path for a keyfile"
        )
    return path or settings.keyring


@click.group("keys")
def keys() -> None:
    """The keyring: versioned master keys (never shown)."""


@keys.command("init")
@_PATH
def keys_init(path: Path | None) -> None:
    """Write a demo keyfile (mode 0600); refuses to overwrite one."""
    target = _keyfile(path)
    try:
        init_keyfile(target)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote demo keyring {target} (mode 0600), version 1 active")
    click.echo(DEMO_WARNING, err=True)


@keys.command("rotate")
@_PATH
def keys_rotate(path: Path | None) -> None:
    """Make a new key version active; older versions still verify tokens and reveal values.

    The hub's audit log is resealed under the new version at once, so destroying the old one later
    leaves the log verifiable.
    """
    target = _keyfile(path)
    try:
        keyring = rotate_keyfile(target)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{target}: version {keyring.active_version} is now active; versions held {list(keyring.versions)}")
    _reseal_if_hub_keyring(target, keyring)


def _reseal_if_hub_keyring(target: Path, keyring: Keyring) -> None:
    """Chain the hub's audit log under the keyring's active version, when ``target`` is the hub's keyfile."""
    from privacy.audit_log import reseal_log

    settings = Settings.from_env()
    if target.resolve() != settings.keyring or not settings.audit_log.exists():
        return
    engine = settings.engine()
    try:
        entry = reseal_log(settings.audit_log, engine, keyring)
    except HubError as exc:
        raise click.ClickException(f"audit log {settings.audit_log} was not resealed: {exc}") from None
    finally:
        engine.dispose()
    if entry is not None:
        click.echo(f"audit log {settings.audit_log} resealed under key version {keyring.active_version}")


@keys.command("destroy")
@click.option("--version", "version", type=int, required=True, help="The key version to destroy.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_PATH
def keys_destroy(version: int, yes: bool, path: Path | None) -> None:
    """Delete a key version: everything protected under it is crypto-shredded. Not the active one."""
    target = _keyfile(path)
    if not yes:
        click.confirm(f"Destroy key version {version}? Values under it can never be revealed again", abort=True)
    try:
        _reseal_if_hub_keyring(target, Keyring.from_file(target))  # keep the log verifiable without that version
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        destroy_key_version(target, version)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{target}: version {version} destroyed; values protected under it are crypto-shredded")


@keys.command("list")
def keys_list() -> None:
    """Key versions with their creation times and state; never key material."""
    keyring = _keyring()
    click.echo(f"keyring: {keyring.source}")
    for v in keyring.describe():
        state = "active" if v.active else ("destroyed " + str(v.destroyed) if v.destroyed else "held")
        click.echo(f"  v{v.version}  created {v.created or '?'}  {state}")
