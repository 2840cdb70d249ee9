"""Figures for the walkthrough: routing, expert load, attention, RoPE, quantisation, memory.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure
state, nothing shown, safe on the Agg backend and in tests); a notebook displays it as the
cell's value, a script saves it with ``fig.savefig(path)``.

What the model can show is asked for with ``capture``::

    logits, cap = model(tokens, capture=True)
    # cap["router_probs"] [L, B, T, E]   cap["experts"], cap["gates"] [L, B, T, k]
    # cap["attention"]    [L, B, K, R, T, S]   (K kv-heads × R query heads each)
    viz.routing_heatmap(cap["experts"], labels, gates=cap["gates"])
    viz.expert_load(cap["experts"], num_experts=cfg.num_experts)
    viz.attention_maps(cap["attention"], labels, layer=0, kv_head=0)

``token_labels(tokenizer, ids)`` turns token ids into short, printable tick labels.

The figures live in one module per topic, each drawing from a config or from what the model
captured: ``figures`` (the architecture and the model's captures) and the course's concept
pictures, one module per notebook (``rope``, ``attention``, ``moe``, ``quant``, ``layer``,
``mesh``, ``checkpoint``, ``long_context``, ``training``, ``ablation``). All of them are
re-exported here, so ``viz.<name>`` works for every figure.
"""

from grok_flax.viz import (
    ablation,
    attention,
    checkpoint,
    figures,
    layer,
    long_context,
    mesh,
    moe,
    quant,
    rope,
    training,
)
from grok_flax.viz.ablation import *  # noqa: F403
from grok_flax.viz.attention import *  # noqa: F403
from grok_flax.viz.checkpoint import *  # noqa: F403
from grok_flax.viz.figures import *  # noqa: F403
from grok_flax.viz.layer import *  # noqa: F403
from grok_flax.viz.long_context import *  # noqa: F403
from grok_flax.viz.mesh import *  # noqa: F403
from grok_flax.viz.moe import *  # noqa: F403
from grok_flax.viz.quant import *  # noqa: F403
from grok_flax.viz.rope import *  # noqa: F403
from grok_flax.viz.training import *  # noqa: F403

__all__ = [
    *figures.__all__,  # noqa: F405
    *rope.__all__,  # noqa: F405
    *attention.__all__,  # noqa: F405
    *moe.__all__,  # noqa: F405
    *quant.__all__,  # noqa: F405
    *layer.__all__,  # noqa: F405
    *mesh.__all__,  # noqa: F405
    *checkpoint.__all__,  # noqa: F405
    *long_context.__all__,  # noqa: F405
    *training.__all__,  # noqa: F405
    *ablation.__all__,  # noqa: F405
]
