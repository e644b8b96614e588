"""Block influence (ShortGPT) on a tiny Llama built from a config (no download): a block made an identity
(its attention and MLP write nothing into the residual stream) has the lowest influence, and `distilled`
drops exactly it; "every" keeps one block in N and records what it dropped."""

from __future__ import annotations

import pytest
import torch

from leanserve.compressors.block_influence import block_influences, cosine_per_token, lowest_influence
from leanserve.compressors.distill import choose_layers, make_student
from leanserve.methods.distill import Params

pytestmark = pytest.mark.unit

SAMPLES = [[(5 * i + 3 * j) % 64 for j in range(16)] for i in range(3)]


def _llama_with_identity_block(identity: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.5)).eval()
    block = model.get_decoder().layers[identity]
    with torch.no_grad():  # both residual branches add zero: the block's output is its input
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    return model


def test_an_identity_block_has_the_lowest_influence() -> None:
    model = _llama_with_identity_block(2)
    influence = block_influences(model, SAMPLES)
    assert len(influence) == 4
    assert influence[2] < 1e-5 and min(b for i, b in enumerate(influence) if i != 2) > 1e-3
    assert lowest_influence(influence, 1) == [2]
    keep, facts = choose_layers(model, SAMPLES, Params(drop_layers=1))
    assert keep == [0, 1, 3] and facts["layers_dropped"] == [2] and facts["block_influence"][2] < 1e-5
    # dropping an identity changes nothing: the student's logits are the teacher's
    ids = torch.tensor([SAMPLES[0]])
    with torch.no_grad():
        assert torch.allclose(make_student(model, keep)(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


def test_lowest_influence_and_cosine() -> None:
    assert lowest_influence([0.3, 0.1, 0.2, 0.1], 2) == [1, 3]  # returned in block order
    assert lowest_influence([0.5, 0.5, 0.5], 1) == [0]  # a tie goes to the earlier block
    h = torch.randn(2, 3, 8)
    assert torch.allclose(cosine_per_token(h, 2 * h), torch.ones(6))
    assert torch.allclose(cosine_per_token(h, -h), -torch.ones(6))


def test_every_keeps_one_in_n_without_measuring() -> None:
    model = _llama_with_identity_block(2)
    keep, facts = choose_layers(model, SAMPLES, Params(layer_choice="every", keep_every=2, drop_layers=0))
    assert keep == [0, 2, 3] and facts == {"layer_choice": "every", "layers_dropped": [1]}
