"""Error messages for a corpus of bad .theory files, against golden files.

tests/golden/errors/NAME.theory is the bad file and NAME.txt the exact text of its
`TheoryError.format()`; THEORYC_UPDATE_GOLDEN=1 rewrites the .txt files. Besides the exact text,
every message is checked for its shape (LANGUAGE.md, "Errors"): the file, line and column, the
offending line with a caret under the place, one sentence, and a hint.
"""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from conftest_compiler import GOLDEN, check_golden, private_cache  # noqa: F401
from theoryc import api
from theoryc.cli import main
from theoryc.dsl.errors import SHOWN_WIDTH, TheoryError, source_lines
from theoryc.dsl.parser import displayable

CORPUS = GOLDEN / "errors"
CASES = sorted(p.stem for p in CORPUS.glob("*.theory"))
# --set values for the cases that are about them (a file alone cannot carry one)
OVERRIDES = {"set_unknown_param": {"kapa": "2"}, "set_bad_value": {"kappa": "os.system"}}
# A sentence of the message must not be followed by another one; hints may have two clauses.
HEADER = re.compile(r"^(Syntax error|Semantic error|Error) in '([^']+)'(?:, line (\d+), column (\d+))?:$")


def error_of(name: str) -> TheoryError:
    data = (CORPUS / f"{name}.theory").read_bytes()
    with pytest.raises(TheoryError) as info:
        api.compile_bytes(data, f"{name}.theory", OVERRIDES.get(name))
    return info.value


def test_the_corpus_covers_the_required_cases():
    required = {"unknown_name_suggestion", "bracket_mismatch", "bracket_never_closed",
                "bracket_never_opened", "site_and_direction", "unbound_direction", "extent_zero",
                "extent_fraction", "extent_unknown_name", "extent_non_integer_param",
                "drift_nonlinear", "drift_affine", "symmetry_false", "binary_nul", "binary_not_utf8",
                "python_import", "python_exec", "python_lambda", "missing_action", "two_actions",
                "duplicate_name", "field_bare_on_lattice", "field_site_in_0d",
                "average_outside_estimate", "observable_in_action", "unknown_function",
                "wrong_arity", "unit_vector_out_of_range", "complex_not_holomorphic",
                "set_unknown_param"}
    assert required <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_error_message_matches_golden(name):
    check_golden(CORPUS / f"{name}.txt", error_of(name).format() + "\n")


@pytest.mark.parametrize("name", CASES)
def test_error_message_shape(name):
    err = error_of(name)
    lines = err.format().split("\n")
    head = HEADER.match(lines[0])
    assert head, lines[0]
    assert head.group(2) == f"{name}.theory"
    if name.startswith("set_"):                 # about the command line, not a place in the file
        assert err.span is None and head.group(3) is None
        message = lines[1:]
    else:
        line, column = int(head.group(3)), int(head.group(4))
        source = source_lines(displayable((CORPUS / f"{name}.theory").read_bytes()))
        caret = lines[2][len("      | "):]
        assert lines[2].startswith("      | ") and caret.lstrip(" ").startswith("^")
        assert set(caret.strip()) == {"^"}
        at = len(caret) - len(caret.lstrip(" "))
        if len(source[line - 1]) <= SHOWN_WIDTH:
            assert lines[1] == f"  {line:>3} | {source[line - 1]}"
            assert at == column - 1 and len(caret) <= max(len(source[line - 1]), column)
        else:                                   # a window of a long line, the caret on the place
            shown = lines[1][len(f"  {line:>3} | "):]
            assert len(shown) <= SHOWN_WIDTH + 6 and shown.strip(".") in source[line - 1]
            assert shown[at] == source[line - 1][column - 1] and len(caret) <= len(shown)
        message = lines[3:]
    text, *rest = message
    assert text.startswith("  ") and not text.startswith("  Hint")
    assert ". " not in text.strip() and not text.rstrip().endswith("."), f"one sentence: {text!r}"
    assert len(rest) == 1 and rest[0].startswith("  Hint: "), f"no hint for {name}"
    assert "Traceback" not in err.format() and "lark" not in err.format().lower()


def test_suggestion_for_a_typo():
    err = error_of("unknown_name_suggestion")
    assert err.message == "unknown name 'kapa'" and err.hint == "did you mean 'kappa'?"


@pytest.mark.parametrize("name", ["python_import", "python_exec", "python_lambda", "python_statement"])
def test_python_in_a_theory_is_never_run(name, tmp_path, monkeypatch):
    """The parser refuses the text; nothing it names (os.system, exec, ...) is ever reached."""
    import builtins
    import os

    def forbidden(*args, **kwargs):
        raise AssertionError("a .theory file ran code")

    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    err = error_of(name)
    assert err.kind == "Syntax error" or "unknown" in err.message


@pytest.mark.parametrize("name", CASES)
def test_cli_compile_exits_1_with_the_message_and_no_traceback(name, tmp_path):
    path = tmp_path / f"{name}.theory"
    path.write_bytes((CORPUS / f"{name}.theory").read_bytes())
    sets = [f"--set={k}={v}" for k, v in OVERRIDES.get(name, {}).items()]
    result = CliRunner().invoke(main, ["compile", str(path), *sets])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    out = result.output
    assert "Traceback" not in out
    expected = error_of(name).format().replace(f"'{name}.theory'", f"'{path}'")
    assert expected in out
