import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY
from flax import nnx

from grok_flax import Grok, GrokConfig
from grok_flax.checkpoint import load_checkpoint, save_checkpoint
from grok_flax.running.generate import Generator, generate, stream_text
from grok_flax.running.steps import decode_step
from grok_flax.running.tokenizer import Tokenizer

CFG = GrokConfig.tiny(compute_dtype="float32", sequence_len=48)


@pytest.fixture(scope="module")
def model():
    return Grok(CFG, rngs=nnx.Rngs(3))


def full_forward_greedy(model, prompt, n):
    """Greedy by recomputing the whole sequence each step (no KV memory). The sequence is
    right-padded to one fixed length — causal attention makes the padding invisible — so the
    forward compiles once."""
    forward = nnx.jit(lambda m, t: m(t))
    seq = list(prompt)
    width = len(prompt) + n
    for _ in range(n):
        padded = jnp.asarray([seq + [0] * (width - len(seq))])
        seq.append(int(jnp.argmax(forward(model, padded)[0, len(seq) - 1])))
    return seq[len(prompt) :]


@pytest.mark.slow  # the fast tier: test_model's token-by-token decode
def test_cached_decode_equals_full_recompute(model):
    prompt = [17, 3, 99, 45, 8, 200, 31]
    r = generate(model, [prompt], max_new_tokens=10, prefill_chunk=4, min_bucket=4)
    assert r.tokens[0] == full_forward_greedy(model, prompt, 10)
    assert r.timings["chunks"] == 2  # the prompt was prefilled in two chunks


@pytest.mark.slow
def test_batch_equals_rows_alone(model):
    prompts = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48], [9]]
    gen = Generator(model)
    for kw in (dict(), dict(temperature=0.8, top_p=0.9, seed=[11, 12, 13])):
        batch = gen.generate(prompts, max_new_tokens=6, **kw)
        for i, p in enumerate(prompts):
            one_kw = dict(kw, seed=kw["seed"][i]) if "seed" in kw else kw
            assert gen.generate([p], max_new_tokens=6, **one_kw).tokens[0] == batch.tokens[i]


def test_greedy_is_deterministic_and_seeds_reproduce(model):
    gen = Generator(model)
    p = [[1, 2, 3, 4]]
    assert gen.generate(p, max_new_tokens=5).tokens == gen.generate(p, max_new_tokens=5).tokens
    a = gen.generate(p, max_new_tokens=12, temperature=30.0, seed=7).tokens
    b = gen.generate(p, max_new_tokens=12, temperature=30.0, seed=7).tokens
    c = gen.generate(p, max_new_tokens=12, temperature=30.0, seed=8).tokens
    assert a == b and a != c


def test_eos_stops_a_row(model):
    prompts = [[5, 6, 7], [100, 101]]
    free = generate(model, prompts, max_new_tokens=8)
    eos = free.tokens[0][3]
    first = free.tokens[0].index(eos)
    r = generate(model, prompts, max_new_tokens=8, eos_token=eos)
    assert r.tokens[0] == free.tokens[0][:first] and r.finish_reasons[0] == "eos"
    if eos not in free.tokens[1]:
        assert r.tokens[1] == free.tokens[1] and r.finish_reasons[1] == "length"


def test_no_recompilation_per_token_or_prompt_length(model):
    gen = Generator(model)
    gen.generate([[1, 2, 3]], max_new_tokens=4)
    before = decode_step._cache_size()
    for n in (1, 5, 9, 13, 20):
        gen.generate([list(range(1, n + 1))], max_new_tokens=6)
    assert decode_step._cache_size() == before


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(prompts=[[]]), "empty"),
        (dict(prompts=[[5, 256]]), "outside"),
        (dict(prompts=[[5, -1]]), "outside"),
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(prompts=[list(range(1, 46))]), "truncate='left'"),
        (dict(prompts="text"), "tokenizer"),
    ],
)
def test_bad_arguments_are_clear_errors(model, kw, words):
    args = dict(prompts=[[1, 2]], max_new_tokens=4)
    args.update(kw)
    with pytest.raises(ValueError, match=words):
        Generator(model).generate(args.pop("prompts"), **args)


def test_left_truncation_only_when_asked(model):
    long = list(range(1, 46))
    r = Generator(model).generate([long], max_new_tokens=4, truncate="left")
    assert r.prompt_tokens[0] == long[-(48 - 4) :]


def test_reference_greedy_continues_as_full_forward_argmax():
    case = TINY
    meta = json.loads((case / "meta.json").read_text())
    model = load_checkpoint(
        case / "checkpoints", GrokConfig.from_reference_meta(meta), progress=False
    )
    prompt = meta["tokens"][0]
    r = generate(model, [prompt], max_new_tokens=12)
    assert r.tokens[0] == full_forward_greedy(model, prompt, 12)
    # The original code's own sampler (run.py's InferenceRunner, temperature 0.01, seed 42) on
    # this checkpoint continued the prompt with these 12 tokens (run on this machine with
    # jax 0.4.25 / haiku 0.0.12, 8 simulated CPU devices, mesh 1×8).
    assert r.tokens[0] == [501, 501, 501, 501, 501, 457, 457, 457, 457, 457, 518, 664]


def test_tokenizer_matches_the_release(tokenizer_path):
    tok = Tokenizer(tokenizer_path)
    assert tok.vocab_size == 131072
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    text = "The answer to life the universe and everything is of course"
    ids = tok.encode(text)
    assert ids[0] != tok.bos_id and tok.decode(ids) == text
    assert tok.encode(text, bos=True)[0] == 1
    assert tok.decode(tok.encode("héllo 😀\n\tdef f(x):")) == "héllo 😀\n\tdef f(x):"


@pytest.fixture(scope="module")
def real_vocab_ckpt(tmp_path_factory):
    cfg = GrokConfig.tiny(
        vocab_size=131072,
        emb_size=16,
        key_size=4,
        widening_factor=1.0,
        num_layers=1,
        compute_dtype="float32",
    )
    model = Grok(cfg, rngs=nnx.Rngs(0))
    path = tmp_path_factory.mktemp("rv")
    save_checkpoint(model, path)
    (path / "config.json").write_text(cfg.to_json())
    return cfg, path


@pytest.mark.slow
def test_cli_streams_only_the_continuation(real_vocab_ckpt, tokenizer_path):
    cfg, path = real_vocab_ckpt
    prompt = "The answer to life the universe and everything is of course"
    model = load_checkpoint(path, cfg, progress=False)
    tok = Tokenizer(tokenizer_path)
    gen = Generator(model, tok)
    want = "".join(stream_text(gen, prompt, max_new_tokens=5))
    assert want == gen.last.texts[0]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grok_flax",
            "generate",
            "--checkpoint",
            str(path),
            "--config",
            str(path / "config.json"),
            "--tokenizer",
            str(tokenizer_path),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "5",
            "--mesh",
            "data=1,model=2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == want + "\n"
    assert "tok/s" in out.stderr


def test_cli_bad_config_is_a_clear_error(tmp_path, tokenizer_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grok_flax",
            "generate",
            "--checkpoint",
            str(tmp_path),
            "--config",
            '{"num_layerz": 1}',
            "--tokenizer",
            str(tokenizer_path),
            "--prompt",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2 and "num_layerz" in out.stderr
    assert out.stdout == ""


def test_sampling_filters_match_reference_semantics():
    from grok_flax.running.sampling import sample, top_k_filter, top_p_filter

    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.asarray(top_p_filter(logits, jnp.array([0.7])) > -1e9)[0]
    assert kept.tolist() == [True, True, False, False]  # 0.5 + 0.3 reach 0.7
    assert np.asarray(top_p_filter(logits, jnp.array([1.0])) > -1e9).all()
    assert np.asarray(top_k_filter(logits, jnp.array([1])) > -1e9)[0].tolist() == [
        True,
        False,
        False,
        False,
    ]
    import jax

    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    greedy = sample(logits[:, ::-1], keys, jnp.zeros(1), jnp.ones(1), jnp.zeros(1, jnp.int32))
    assert int(greedy[0]) == 3


# every kind of mesh × three shapes; the fast tier keeps one: JAX's default (Explicit) 2×4
MESH_CASES = [
    pytest.param(
        kind,
        shape,
        id=f"{shape[0]}x{shape[1]}-{kind}",
        marks=() if (kind, shape) == ("explicit", (2, 4)) else pytest.mark.slow,
    )
    for shape in [(2, 2), (1, 8), (2, 4)]
    for kind in ["grok_flax", "explicit", "auto"]
]


@pytest.mark.parametrize("kind, shape", MESH_CASES)
def test_generation_on_a_mesh_equals_single_device(model, kind, shape):
    import jax
    from jax.sharding import AxisType

    from grok_flax.scale.mesh import make_mesh
    from grok_flax.scale.sharding import shard_module

    prompts = [[5, 6, 7], [40, 41, 42, 43, 44]]
    kw = dict(max_new_tokens=5)
    want = generate(model, prompts, **kw).tokens
    want_sampled = generate(model, prompts, temperature=0.9, top_k=20, seed=4, **kw).tokens
    sharded = Grok(CFG, rngs=nnx.Rngs(3))
    if kind == "grok_flax":
        mesh = make_mesh(*shape)
    else:
        types = (AxisType.Explicit if kind == "explicit" else AxisType.Auto,) * 2
        mesh = jax.make_mesh(shape, ("data", "model"), axis_types=types)
    shard_module(sharded, mesh)
    assert generate(sharded, prompts, mesh=mesh, **kw).tokens == want
    assert (
        generate(sharded, prompts, mesh=mesh, temperature=0.9, top_k=20, seed=4, **kw).tokens
        == want_sampled
    )


@pytest.mark.parametrize("top_k", [0, 1, 5, 40])
@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.3])
def test_one_sort_filter_equals_the_two_filters(top_k, top_p):
    from grok_flax.running.sampling import top_k_filter, top_k_top_p_filter, top_p_filter

    logits = jax.random.normal(jax.random.key(top_k), (3, 500)) * 3
    logits = logits.at[1, :7].set(2.5)  # ties
    k = jnp.full((3,), top_k, jnp.int32)
    p = jnp.full((3,), top_p, jnp.float32)
    want = top_p_filter(top_k_filter(logits, k), p)
    np.testing.assert_array_equal(np.asarray(top_k_top_p_filter(logits, k, p)), np.asarray(want))


@pytest.mark.parametrize("top_k", [1, 5, 40])
def test_top_k_preselection_keeps_the_distribution(top_k):
    from grok_flax.running.sampling import candidates_for, top_k_top_p_filter

    V = 3000
    logits = jax.random.normal(jax.random.key(1), (2, V)) * 2
    k = jnp.full((2,), top_k, jnp.int32)
    p = jnp.asarray([0.9, 1.0], jnp.float32)
    C = candidates_for(top_k, V)
    full = jax.nn.softmax(top_k_top_p_filter(logits, k, p), axis=-1)
    values, index = jax.lax.top_k(logits, C)
    part = jax.nn.softmax(top_k_top_p_filter(values, k, p), axis=-1)
    scattered = jnp.zeros_like(full).at[jnp.arange(2)[:, None], index].set(part)
    np.testing.assert_allclose(np.asarray(scattered), np.asarray(full), atol=1e-7)
    # and the sampler with pre-selection only ever draws allowed tokens
    from grok_flax.running.sampling import sample

    draw = jax.jit(jax.vmap(lambda key: sample(logits, key, jnp.ones(2), p, k, candidates=C)))
    seeds = jax.vmap(jax.random.key)(jnp.arange(40)).reshape(20, 2)  # 20 draws of the 2 rows
    tok = np.asarray(draw(seeds))  # [20, 2]
    assert (np.asarray(full)[np.arange(2), tok] > 0).all()


def test_all_greedy_rows_skip_the_sampling_work():
    from grok_flax.running.sampling import sample

    logits = jax.random.normal(jax.random.key(0), (2, 1000))
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    text = (
        jax.jit(sample)
        .lower(logits, keys, jnp.zeros(2), jnp.ones(2), jnp.zeros(2, jnp.int32))
        .as_text()
    )
    assert "conditional" in text or "case" in text  # the draw sits behind a lax.cond
    tok = sample(logits, keys, jnp.zeros(2), jnp.ones(2), jnp.zeros(2, jnp.int32))
    np.testing.assert_array_equal(np.asarray(tok), np.asarray(logits.argmax(-1)))


def test_speed_is_steady_decode_with_compilation_apart():
    """One speed figure: decode tok/s over the steps after the first (compilation excluded),
    prefill tok/s without its compilation, and the compile time itself reported apart."""
    cfg = GrokConfig.tiny(compute_dtype="float32", sequence_len=40, vocab_size=264)  # own shapes
    gen = Generator(Grok(cfg, rngs=nnx.Rngs(0)))
    first = gen.generate([[5, 6, 7, 8]], max_new_tokens=6)
    again = gen.generate([[9, 6, 7, 8]], max_new_tokens=6)  # same shapes: nothing compiles
    assert first.prefill_compile_seconds > 0 and first.decode_compile_seconds > 0
    assert first.prefill_compile_seconds < first.prefill_seconds
    assert again.compile_seconds < 0.05 * first.compile_seconds
    for r in (first, again):
        steps = r.decode_steps - 1
        assert r.decode_tokens_per_s == pytest.approx(
            steps / (r.decode_seconds - r.first_step_seconds)
        )
        assert r.prefill_tokens_per_s == pytest.approx(
            4 / (r.prefill_seconds - r.prefill_compile_seconds)
        )
    text = first.speed()
    assert text.startswith("prefill ") and "tok/s (steady), compilation" in text
    assert gen.last is again
