"""The hotline's flow files are rules like the others: GRIDLINE_FLOW and GRIDLINE_SURVEY_FLOW
name a deployment's file merged over the packaged one, refused with one line naming the key."""

from __future__ import annotations

import pytest

from core.platform.rules import RulesError
from ivr.config import FLOW, SURVEY_FLOW, FlowConfig, load_flow
from ivr.flow import Flow
from ivr.survey_twiml import SurveyFlowConfig


def test_without_an_override_the_packaged_flows_apply(monkeypatch):
    monkeypatch.delenv(FLOW.env, raising=False)
    monkeypatch.delenv(SURVEY_FLOW.env, raising=False)
    assert FlowConfig.load().data == FLOW.packaged_data()
    assert SurveyFlowConfig.load().data == SURVEY_FLOW.packaged_data()


def test_a_flow_override_changes_the_hotline_key_by_key(override):
    override('[petition]\nmax_seconds = 90\n[menu.digits]\n"3" = "status"\n', "GRIDLINE_FLOW")
    flow = load_flow()
    assert flow["petition"]["max_seconds"] == 90
    assert flow["petition"]["silence_s"] == FLOW.packaged_data()["petition"]["silence_s"]
    assert flow["menu"]["digits"] == {"1": "petition", "2": "status", "0": "operator", "3": "status"}
    # The hotline says it: the recording's limit is the deployment's.
    twiml = Flow(FlowConfig.load(), "https://hotline.example.org/").record(
        kind="petition", segment="petition-1", token="t", call_sid="CA1")
    assert 'maxLength="90"' in twiml


def test_a_survey_flow_override_changes_the_follow_up_call(override):
    override('[questions]\norder = ["satisfied", "solved"]\n[keys]\nwrong_person = "8"\n', "GRIDLINE_SURVEY_FLOW")
    config = SurveyFlowConfig.load()
    assert config["questions"]["order"] == ["satisfied", "solved"]
    assert config["keys"] == {"wrong_person": "8", "operator": "0"}
    assert SurveyFlowConfig.load(comment={"wait_s": 1.0})["comment"]["wait_s"] == 1.0  # tests' overrides still apply


@pytest.mark.parametrize("variable, text, named", [
    ("GRIDLINE_FLOW", "[petition]\nmax_second = 90\n", "petition.max_second: unknown key (did you mean 'max_seconds'?)"),
    ("GRIDLINE_FLOW", '[petition]\nmax_seconds = "90"\n', "petition.max_seconds: must be a number, not a string"),
    ("GRIDLINE_FLOW", "[petition]\nsilence_s = 0\n", "petition.silence_s: must be greater than 0"),
    ("GRIDLINE_FLOW", '[menu.digits]\n"3" = "weather"\n', "menu.digits.3: 'weather' is not one of petition, status, operator"),
    ("GRIDLINE_FLOW", '[menu.digits]\n"12" = "status"\n', "menu.digits.12: a key is one of 0-9, * or #"),
    ("GRIDLINE_FLOW", 'language = "xx"\n', "language: no prompt catalogue ivr/prompts/xx.toml"),
    ("GRIDLINE_SURVEY_FLOW", '[questions]\norder = ["solved"]\n', "questions.order: must name solved and satisfied"),
    ("GRIDLINE_SURVEY_FLOW", '[keys]\nwrong_person = "0"\n', "keys: two actions share a key"),
    ("GRIDLINE_SURVEY_FLOW", '[voice]\nrate = "fast"\n', "voice.rate: 'fast' is not a percentage"),
    ("GRIDLINE_SURVEY_FLOW", "[comment]\nwait = 2\n", "comment.wait: unknown key (did you mean 'wait_s'?)"),
])
def test_a_bad_flow_override_is_refused_naming_file_and_key(override, variable, text, named):
    path = override(text, variable)
    with pytest.raises(RulesError) as exc:
        (FLOW if variable == "GRIDLINE_FLOW" else SURVEY_FLOW).load()
    assert str(exc.value).startswith(f"{variable}={path}: ")
    assert named in str(exc.value) and "\n" not in str(exc.value)
