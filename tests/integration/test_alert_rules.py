"""The Prometheus rules (ops/prometheus/rules) are valid, unit-tested, loaded by the
compose config, documented, and only use metrics the code exports.

promtool is Debian's prometheus 2.42 (./run setup); compose runs Prometheus 3.x, so the
rules keep to syntax both accept.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.dashboards import defined_metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "ops" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "agora.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "agora.rules.test.yml"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: ./run setup installs Debian's prometheus"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_checks_the_rules():
    assert_ok(promtool("check", "rules", str(RULES)))


def test_promtool_rule_unit_tests_pass():
    # Run from the test file's directory: its rule_files entry is a relative path.
    assert_ok(promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent))


def test_prometheus_config_loads_the_rules():
    # Works offline: check config does not resolve the dns_sd names. No rewritten copy is
    # needed either: rule_files is relative to the config's directory, so the same entry
    # is /etc/prometheus/rules/*.yml in compose and ops/prometheus/rules/*.yml here, and
    # promtool checks the rule files it matches.
    proc = promtool("check", "config", str(PROMETHEUS_YML))
    assert_ok(proc)
    assert str(RULES) in proc.stdout, f"the config's rule_files do not match {RULES}:\n{proc.stdout}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_is_actionable(alert: dict):
    name = alert["alert"]
    assert alert.get("for"), f"{name}: no 'for', so one bad scrape or evaluation pages"
    assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not in {SEVERITIES}"
    annotations = alert.get("annotations", {})
    for key in ("summary", "description"):
        assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"
    assert "$value" in annotations["summary"] + annotations["description"], (
        f"{name}: the annotations do not show the value that fired"
    )


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test") or []:
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for alert in alerts():
        seen = cases.get(alert["alert"], set())
        assert seen == {True, False}, (
            f"{alert['alert']}: needs a unit test where it fires and one where it does not; "
            f"has firing={True in seen}, silent={False in seen}"
        )


def metric_names(expr: str) -> set[str]:
    # Recording rules are agora:...: the colon keeps them out of this match.
    return set(re.findall(r"\bagora_[a-z0-9_]+\b", expr))


def test_rules_use_only_metrics_the_code_exports():
    used = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert used, "no agora_* metric found in the rules: the pattern is wrong"
    missing = sorted(used - defined_metrics())
    assert not missing, f"metrics used in {RULES.relative_to(REPO)} but not exported: {missing}"


def test_rules_read_recordings_made_earlier_in_their_own_group():
    # Groups are evaluated independently (promtool orders them at random): a rule that
    # reads another group's recording may see the previous evaluation's value.
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        recorded: set[str] = set()
        for rule in group["rules"]:
            for name in re.findall(r"\bagora:[a-z0-9_:]+\b", rule["expr"]):
                assert name in recorded, (
                    f"{rule.get('alert') or rule.get('record')} reads {name}, which is not "
                    f"recorded before it in group {group['name']}"
                )
            if "record" in rule:
                recorded.add(rule["record"])
