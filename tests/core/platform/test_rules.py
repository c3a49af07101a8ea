"""Rules: a deployment's GRIDLINE_RULES file is merged over the packaged rules key by key
and checked; a bad file is refused with one line that names the key."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

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


# -- every key is read ------------------------------------------------------------------

SOURCE = Path(__file__).resolve().parents[3]
# Tables whose keys are data, not names the code spells: each is read whole and looked up
# by a value (an urgency, a role, a category code …). Their own name must still be read.
DATA_KEYED = {
    ("core/data/rules.toml", "sla.default"): "core/deadlines/sla.py default_sla: by urgency",
    ("core/data/rules.toml", "console.roles"): "console/access.py role_rules: by an account's role",
    ("core/data/rules.toml", "console.clears_flags"): "console/casework.py: by the action taken",
    ("core/data/rules.toml", "worker.report.min_photos_by_category"): "core/people/staff.py required_photos: by category code",
    ("core/data/rules.toml", "worker.messages"): "core/people/staff.py message_rule: by action[:status]",
    ("core/data/rules.toml", "worker.reminders"): "core/people/staff.py reminder_recipients: by colour",
    ("core/data/rules.toml", "scores.points"): "core/reporting/scores.py: by survey answer",
    ("core/data/categories.toml", "category.sla"): "core/actions/categories.py: by urgency",
    ("core/data/rules.toml", "flags.settled_by"): "core/actions/_base.py: by the lifecycle action taken",
    ("ivr/flow.toml", "menu.digits"): "ivr/web.py: by the key pressed",
    ("core/data/intents.toml", "intents"): "core/cases/intents.py: by the intent the caller's words mean",
    ("ivr/survey_flow.toml", "answers.solved"): "ivr/survey_answers.py: by the answer on the rules' scale",
    ("ivr/survey_flow.toml", "answers.satisfied"): "ivr/survey_answers.py: by the answer on the rules' scale",
}


def _keys_read_in_code() -> set[str]:
    """Every string the production code uses as a subscript (``x["key"]``) or asks ``.get``
    for. The loader and its checks (core/platform/rules.py) do not count: checking a key is not using it."""
    found: set[str] = set()
    for package in ("core", "ivr", "chat", "console", "gridline"):
        for file in (SOURCE / package).rglob("*.py"):
            if file == SOURCE / "core" / "rules.py":
                continue
            for node in ast.walk(ast.parse(file.read_text("utf-8"))):
                if isinstance(node, ast.Subscript):
                    key = node.slice
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                        and node.args:
                    key = node.args[0]
                else:
                    continue
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.add(key.value)
    return found


def _key_paths(data: object, path: tuple[str, ...] = ()):  # noqa: ANN202
    """Every leaf's path; the tables of an array of tables count once, under the array's name."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _key_paths(value, (*path, key))
    elif isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        merged: dict = {}
        for item in data:
            merged |= item
        yield from _key_paths(merged, path)
    else:
        yield path


def test_every_packaged_key_is_read_somewhere():
    import core.cases.intents  # noqa: F401 (registers the intents' file)
    import ivr.config  # noqa: F401 (registers the hotline's files)

    assert sorted(f.label for f in rules.RULE_FILES) == sorted([
        "core/data/rules.toml", "core/data/categories.toml", "ivr/flow.toml", "ivr/survey_flow.toml",
        "core/data/intents.toml"])
    read = _keys_read_in_code()
    unread, keyed_seen = [], set()
    for rule_file in rules.RULE_FILES:
        for path in _key_paths(rule_file.packaged_data()):
            names = list(path)
            for i in range(len(path)):
                if (rule_file.label, ".".join(path[:i])) in DATA_KEYED:
                    keyed_seen.add((rule_file.label, ".".join(path[:i])))
                    names[i] = ""  # a data value, not a name the code spells
            missing = [name for name in names if name and name not in read]
            if missing:
                unread.append(f"{rule_file.label} {'.'.join(path)} (never read: {', '.join(missing)})")
    assert unread == []
    assert keyed_seen == set(DATA_KEYED)  # the list above names only tables that exist


def test_the_key_scan_notices_a_key_nobody_reads():
    read = _keys_read_in_code()
    assert "retention_days" in read and "batch_size" in read
    assert "retention_weeks" not in read


# -- one merge, one loader for every file ----------------------------------------------------


def test_deep_merge_replaces_named_keys_and_whole_lists_and_changes_neither_side():
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": [{"code": "x"}]}
    given = {"a": {"c": [3], "d": {"g": 2}}, "f": [{"code": "y"}]}
    merged = rules.deep_merge(base, given)
    assert merged == {"a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}}, "f": [{"code": "y"}]}
    merged["a"]["d"]["e"] = 99
    merged["f"][0]["code"] = "z"
    assert base["a"]["d"]["e"] == 1 and given["f"][0]["code"] == "y"


def _categories_text(**changes) -> str:
    """The packaged categories.toml with a change or two, as a deployment would write it."""
    text = (rules.DATA_DIR / "categories.toml").read_text("utf-8")
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_a_categories_override_replaces_the_lists(override):
    override('[[department]]\ncode = "water"\nname = "水务"\nphone = "1"\n\n'
                    '[[category]]\ncode = "leak"\nname = "漏水"\ndepartment = "water"\nkeywords = ["漏水"]\n'
                    'duplicate_radius_m = 50\nduplicate_window_hours = 24.5\n'
                    'sla = { normal = [4, 24], urgent = [2, 8], emergency = [1, 4] }\n', rules.CATEGORIES_ENV)
    loaded = rules.load_categories()
    assert [c["code"] for c in loaded["category"]] == ["leak"]
    assert [d["code"] for d in loaded["department"]] == ["water"]
    assert loaded["category"][0]["duplicate_window_hours"] == 24.5


@pytest.mark.parametrize("text, named", [
    ('[[category]]\ncode = "x"\ncolour = "red"\n', "category[0].colour: unknown key"),
    ('[[category]]\ncode = "x"\nkeywords = "漏水"\n', "category[0].keywords: must be a list, not a string"),
    ('[[category]]\ncode = "x"\nname = "漏水"\n', "category[0].department: missing"),
    ('[[department]]\ncode = "x"\nname = "y"\nphone = "1"\n', "category[0].department: unknown department 'housing'"),
    ('[[category]]\ncode = "x"\nname = "漏水"\ndepartment = "water"\nkeywords = []\nduplicate_radius_m = 5\n'
     'duplicate_window_hours = 5\nsla = { normal = [4, 24], urgent = [2, 8] }\n', "category[0].sla.emergency: missing"),
    ('[[category]]\ncode = "x"\nname = "漏水"\ndepartment = "water"\nkeywords = []\nduplicate_radius_m = 5\n'
     'duplicate_window_hours = 5\nsla = { normal = [24, 4], urgent = [2, 8], emergency = [1, 4] }\n',
     "category[0].sla.normal: must be [response_hours, resolution_hours]"),
    ("department = 3\n", "department: must be a list, not a number"),
])
def test_a_bad_categories_override_is_refused_naming_file_and_key(override, text, named):
    path = override(text, rules.CATEGORIES_ENV)
    with pytest.raises(RulesError) as exc:
        rules.load_categories()
    assert str(exc.value).startswith(f"GRIDLINE_CATEGORIES={path}: ")
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_a_code_given_twice_is_refused(override):
    text = _categories_text(**{'code = "sewer_blocked"': 'code = "streetlight"'})
    override(text, rules.CATEGORIES_ENV)
    with pytest.raises(RulesError, match=r"category\[1\]\.code: 'streetlight' is given twice"):
        rules.load_categories()


def test_reload_forgets_every_file(override):
    assert rules.load_categories() is rules.load_categories()  # loaded once per process
    override(_categories_text(**{'name = "路灯故障"': 'name = "路灯不亮"'}), rules.CATEGORIES_ENV)
    assert rules.load_categories()["category"][0]["name"] == "路灯不亮"
