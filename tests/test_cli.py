"""The command line, tried as a new user would: every user error exits 2 with one line on
stderr, cheap checks come before any loading, and --help documents every option."""

import json
import re

import pytest
from conftest import TOKENIZER

from grok_flax.__main__ import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def generate_x(capsys, checkpoint, tokenizer, *more):
    """``generate --prompt x --checkpoint C --tokenizer T [more]``: (code, stdout, stderr)."""
    return run(
        capsys,
        "generate",
        "--prompt",
        "x",
        "--checkpoint",
        str(checkpoint),
        "--tokenizer",
        str(tokenizer),
        *more,
    )


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top-p", "2"], "error: --top-p must be in (0, 1], got 2.0"),
        (["--top-p", "0"], "error: --top-p must be in (0, 1], got 0.0"),
        (["--temperature", "-1"], "error: --temperature must be >= 0 (0 = greedy), got -1.0"),
        (["--top-k", "-3"], "error: --top-k must be >= 0 (0 = off), got -3"),
        (["--seed", "-1"], "error: --seed must be in [0, 2**32), got -1"),
        (["--seed", str(2**40)], f"error: --seed must be in [0, 2**32), got {2**40}"),
        (["--max-new-tokens", "0"], "error: --max-new-tokens must be >= 1, got 0"),
        (
            ["--mesh", "data=x"],
            "error: bad mesh spec 'data=x': expected e.g. 'data=1,model=8' or '1x8'",
        ),
        (
            ["--config", "grok-1"],
            "error: --config needs --checkpoint (without both, the bundled demo model is used)",
        ),
        (
            ["--checkpoint", "/nonexistent"],
            "error: --checkpoint needs --tokenizer (the release's tokenizer.model)",
        ),
    ],
)
def test_bad_generate_arguments_exit_2_before_loading(capsys, monkeypatch, argv, message):
    import grok_flax.checkpoint

    def no_loading(*a, **k):
        raise AssertionError("the checkpoint was read before the arguments were checked")

    monkeypatch.setattr(grok_flax.checkpoint, "load_checkpoint", no_loading)
    code, out, err = run(capsys, "generate", "--prompt", "x", *argv)
    assert code == 2 and out == ""
    assert one_error_line(err) == message


def test_config_that_is_a_folder_without_config_json(capsys, tmp_path, tokenizer_path):
    code, _, err = generate_x(capsys, tmp_path, tokenizer_path, "--config", str(tmp_path))
    assert code == 2
    assert one_error_line(err) == f"error: {tmp_path} is a folder without a config.json"


def test_corrupt_tokenizer_is_one_line(capsys, tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a sentencepiece model")
    code, _, err = run(
        capsys, "generate", "--prompt", "x", "--checkpoint", str(tmp_path), "--tokenizer", str(bad)
    )
    assert code == 2
    assert one_error_line(err).startswith(f"error: {bad} is not a SentencePiece model")


def test_string_booleans_in_a_config_are_refused(capsys, tmp_path, tokenizer_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"quantized": "false"}))
    code, _, err = generate_x(capsys, tmp_path, tokenizer_path)
    assert code == 2
    assert one_error_line(err) == (
        "error: invalid GrokConfig: quantized must be true or false, got 'false'"
    )


def test_too_long_prompt_names_the_flag(capsys):
    code, _, err = run(
        capsys,
        "generate",
        "--prompt",
        "def f(x):\n" * 200,
        "--max-len",
        "64",
        "--max-new-tokens",
        "8",
    )
    assert code == 2
    line = one_error_line(err)
    assert "--truncate-left" in line and "truncate='left'" not in line
    assert "room for 56" in line


def test_generate_reads_the_checkpoint_folders_config(capsys):
    from grok_flax import demo

    code, out, err = run(
        capsys,
        "generate",
        "--checkpoint",
        str(demo.demo_dir()),
        "--tokenizer",
        str(demo.demo_dir() / "tokenizer.model"),
        "--prompt",
        "import os\n",
        "--max-new-tokens",
        "4",
    )
    assert code == 0, err
    assert "problem" not in err
    # one speed report, the one Generator gives: steady tok/s, compilation apart
    assert re.search(
        r"prefill \d+ tok/s, decode (\d+ tok/s|n/a) \(steady\), compilation "
        r"\d+\.\d s\]",
        err,
    ), err


def test_help_lists_every_command_and_documents_every_option():
    parser = build_parser()
    text = parser.format_help()
    for cmd in ("inspect", "generate", "convert", "plan", "demo"):
        assert cmd in text
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_help_is_plain_text_and_shows_defaults():
    parser = build_parser()
    top = parser.format_help()
    assert "``" not in top and "Every user error exits with status 2" in top
    sub = next(a for a in parser._actions if a.dest == "command")
    plan_help = sub.choices["plan"].format_help()
    for default in (
        "(default: grok-1)",
        "(default: data=1,model=8)",
        "(default: 8192)",
        "(default: 512)",
        "(default: cpu)",
    ):
        assert default in plan_help, default
    gen_help = sub.choices["generate"].format_help()
    assert "(default: 64)" in gen_help and "(default: None)" not in gen_help
    assert "(default: False)" not in gen_help


def test_convert_names_a_missing_source_and_refuses_an_unknown_destination(capsys, tmp_path):
    from grok_flax import demo

    code, _, err = run(capsys, "convert", str(tmp_path / "nonexistent"), str(tmp_path / "x.st"))
    assert code == 2  # the destination is checked first: nothing is read
    assert "unknown destination format '.st'" in one_error_line(err)
    code, _, err = run(
        capsys, "convert", str(tmp_path / "nonexistent"), str(tmp_path / "x.safetensors")
    )
    assert code == 2
    assert one_error_line(err) == f"error: no such file or folder: {tmp_path / 'nonexistent'}"
    code, _, err = run(capsys, "convert", str(demo.demo_dir()), str(tmp_path / "out.txt"))
    assert code == 2 and "'.txt'" in one_error_line(err)
    assert not (tmp_path / "out.txt").exists()  # no folder out.txt/ckpt-0 written
    (tmp_path / "a-file").write_text("x")
    code, _, err = run(capsys, "convert", str(demo.demo_dir()), str(tmp_path / "a-file"))
    assert code == 2 and "is a file" in one_error_line(err)


def test_inspect_fails_on_a_corrupt_checkpoint(capsys, tmp_path):
    import shutil

    from grok_flax import demo

    ckpt = tmp_path / "ckpt-0"
    shutil.copytree(demo.demo_dir() / "ckpt-0", ckpt)
    code, out, err = run(capsys, "inspect", str(tmp_path))
    assert code == 0 and "ERROR" not in out, err
    victim = sorted(ckpt.glob("tensor*"))[3]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    code, out, err = run(capsys, "inspect", str(tmp_path))
    assert code == 2
    assert "ERROR" in out and victim.name in out  # the table still shows every row
    assert "1 of" in one_error_line(err) and "could not be read" in err


def test_generator_takes_numpy_and_jax_token_ids():
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grok_flax import Grok, GrokConfig
    from grok_flax.running.generate import Generator

    cfg = GrokConfig.tiny(compute_dtype="float32", sequence_len=32)
    gen = Generator(Grok(cfg, rngs=nnx.Rngs(0)))
    want = gen.generate([[5, 6, 7]], max_new_tokens=3).tokens
    assert gen.generate(np.array([5, 6, 7]), max_new_tokens=3).tokens == want
    assert gen.generate(jnp.array([[5, 6, 7]]), max_new_tokens=3).tokens == want
    assert gen.generate([np.int64(5), 6, 7], max_new_tokens=3).tokens == want


@pytest.mark.skipif(not TOKENIZER.is_file(), reason="no release tokenizer")
def test_unknown_preset_is_one_line(capsys, tokenizer_path, tmp_path):
    code, _, err = generate_x(capsys, tmp_path, tokenizer_path, "--config", "grok-2")
    assert code == 2
    assert "grok-2" in one_error_line(err)
