"""Rules: a deployment's GRIDLINE_RULES file is merged over the packaged rules key by key
and checked; a bad file is refused with one line that names the key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.deadlines import sweeps
from core.platform import rules
from core.platform.rules import RulesError, build_rules, load_rules, packaged_rules, reload_rules


def test_without_an_override_the_packaged_rules_apply(monkeypatch):
    monkeypatch.delenv(rules.RULES_ENV, raising=False)
    reload_rules()
    assert load_rules() == packaged_rules()
    assert load_rules()["sweeps"]["sla_period_minutes"] == 5


def test_an_override_replaces_only_the_keys_it_names(override):
    override("""
[sla]
warn_fraction = 0.8
[sla.default]
urgent = { response_hours = 2, resolution_hours = 16 }
[sweeps]
sla_period_minutes = 10
""")
    merged, packaged = load_rules(), packaged_rules()
    assert merged["sla"]["warn_fraction"] == 0.8
    assert merged["sla"]["default"]["urgent"] == {"response_hours": 2, "resolution_hours": 16}
    # Keys the file does not name keep their packaged values, down to the nested ones.
    assert merged["sla"]["default"]["normal"] == packaged["sla"]["default"]["normal"]
    assert merged["sla"]["calendar"] == packaged["sla"]["calendar"]
    assert merged["escalation"] == packaged["escalation"]
    assert merged["sweeps"]["schedule_check_seconds"] == packaged["sweeps"]["schedule_check_seconds"]


def test_the_sweep_period_is_read_from_the_rules(override):
    override("[sweeps]\nsla_period_minutes = 15\n")
    assert sweeps.sweep_period() == timedelta(minutes=15)


@pytest.mark.parametrize("text, named", [
    ("[notify]\nstatus = [\"closed\"]\n", "notify.status: unknown key (did you mean 'statuses'?)"),
    ("[notfy]\nstatuses = [\"closed\"]\n", "notfy: unknown key (did you mean 'notify'?)"),
    ("[notify]\nstatuses = [\"closed\", \"done\"]\n", "notify.statuses[1]: unknown status 'done'"),
    ("[notify]\nstatuses = \"closed\"\n", "notify.statuses: must be a list, not a string"),
    ("[sla]\nwarn_fraction = \"75%\"\n", "sla.warn_fraction: must be a number, not a string"),
    ("[sla]\nwarn_fraction = 75\n", "sla.warn_fraction: must be between 0 and 1"),
    ("[sla.calendar]\nworking_hours = [[\"8:30\", \"12:00\"]]\n",
     "sla.calendar.working_hours[0]: '8:30' is not a time of day"),
    ("[sla.calendar]\nworking_hours = [[\"13:30\", \"12:00\"]]\n", "sla.calendar.working_hours[0]: 13:30 is not before 12:00"),
    ("[sla.default]\nurgent = { response_hours = 0, resolution_hours = 8 }\n",
     "sla.default.urgent.response_hours: must be greater than 0"),
    ("[escalation]\nladder = [\"micro\", \"village\"]\n", "escalation.ladder[1]: unknown grid level 'village'"),
    ("[escalation]\nladder = [\"street\", \"micro\"]\n", "escalation.ladder: must climb from small to large grids"),
    ("[escalation]\nauto_on_response_breach = \"yes\"\n", "escalation.auto_on_response_breach: must be true/false"),
    ("[dispatch]\nrole_order = [\"boss\"]\n", "dispatch.role_order[0]: unknown role 'boss'"),
    ("[survey]\ncloses_when_solved = [\"solved\", \"maybe\"]\n", "survey.closes_when_solved[1]: unknown answer 'maybe'"),
    ("[sweeps]\nsla_period_minutes = 0\n", "sweeps.sla_period_minutes: must be greater than 0"),
    ("[survey.phone]\ncalling_hours = [\"20:00\", \"09:00\"]\n", "survey.phone.calling_hours: 20:00 is not before 09:00"),
    ("[survey.phone]\ncalling_hours = [\"9:00\", \"20:00\"]\n", "survey.phone.calling_hours: '9:00' is not a time of day"),
    ("[survey.phone]\nattempts = 0\n", "survey.phone.attempts: must be a whole number ≥ 1"),
    ("[survey.phone]\ncalls_per_second = 0\n", "survey.phone.calls_per_second: must be greater than 0"),
    ("[survey.phone]\nwhen_unreachable = \"forget\"\n",
     "survey.phone.when_unreachable: 'forget' is not one of manual, not_evaluated"),
    ("[survey.channels_by_case]\nhotline = [\"fax\"]\n", "survey.channels_by_case.hotline[0]: unknown survey channel 'fax'"),
    ("[survey.channels_by_case]\nletter = [\"phone\"]\n", "survey.channels_by_case.letter: unknown key"),
    ("[sms]\nstatuses = [\"done\"]\n", "sms.statuses[0]: unknown status 'done'"),
    ("[sms]\nopt_out_words = [\" \"]\n", "sms.opt_out_words: an empty word would opt out every reply"),
    ("[sweeps]\nsla_period_minutes = 1\nschedule_check_seconds = 90\n", "sweeps.schedule_check_seconds"),
    ("sla = 3\n", "sla: must be a table, not a number"),
    ("[sla\n", "not valid TOML"),
])
def test_a_bad_override_is_refused_with_one_line_naming_the_key(override, text, named):
    path = override(text)
    with pytest.raises(RulesError) as exc:
        load_rules()
    message = str(exc.value)
    assert message.startswith(f"GRIDLINE_RULES={path}: ")
    assert named in message
    assert "\n" not in message


def test_a_missing_override_file_is_named(tmp_path):
    with pytest.raises(RulesError, match=r"GRIDLINE_RULES=.*nowhere\.toml: no such file"):
        build_rules(tmp_path / "nowhere.toml")
