"""Per-head / per-MLP components select exactly the right slices: checked against the attention arithmetic of tiny
real transformers models (random init) of every supported layout, through hooks on the output projection."""

import copy

import pytest
import torch

from llc_service.components import resolve_components, validate_spec

LAYERS, HEADS, HIDDEN = 2, 4, 32
D = HIDDEN // HEADS


def tiny(model_type: str):
    import transformers as T

    torch.manual_seed(0)
    if model_type == "gpt_neox":
        cfg = T.GPTNeoXConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                              intermediate_size=48, max_position_embeddings=64)
    elif model_type == "gpt2":
        cfg = T.GPT2Config(vocab_size=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=48, n_positions=64,
                           bos_token_id=0, eos_token_id=0)
    else:  # llama / mistral with grouped-query attention: 4 query heads, 2 kv heads
        C = T.LlamaConfig if model_type == "llama" else T.MistralConfig
        cfg = C(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, attention_bias=True)
    model = T.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # every element non-zero and not tiny (HF init zeroes biases)
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


OUT_PROJ = {"gpt_neox": "gpt_neox.layers.{}.attention.dense", "gpt2": "transformer.h.{}.attn.c_proj",
            "llama": "model.layers.{}.self_attn.o_proj", "mistral": "model.layers.{}.self_attn.o_proj"}
MLP_DOWN = {"gpt_neox": "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt2": "transformer.h.{}.mlp.c_proj",
            "llama": "model.layers.{}.mlp.down_proj", "mistral": "model.layers.{}.mlp.down_proj"}
ARCHS = list(OUT_PROJ)


def run_hooked(model, modules):
    """(inputs, outputs) of the named modules on a fixed batch."""
    seen = {}
    handles = []
    for name in modules:
        mod = model.get_submodule(name)
        handles.append(mod.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, (args[0].detach().clone(), out.detach().clone()))))
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    return seen


def zeroed(model, masks, keep=lambda name: True):
    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if keep(name):
                params[name][mask] = 0.0
    return m


def head_slices(x, heads):
    return x.view(*x.shape[:-1], HEADS, D)[..., heads, :]


def project(model_type, module, x):
    """The output projection applied to its input x (Linear: x W^T + b; GPT-2 Conv1D: x W + b)."""
    if model_type == "gpt2":
        return x @ module.weight + module.bias
    return torch.nn.functional.linear(x, module.weight, module.bias)


@pytest.mark.parametrize("model_type", ARCHS)
def test_attention_head_components_select_exactly_that_heads_slices(model_type):
    model = tiny(model_type)
    comps = resolve_components(model, "attention_heads")
    assert [c.name for c in comps] == [f"layer{i}.head{h}" for i in range(LAYERS) for h in range(HEADS)]
    hooks = [OUT_PROJ[model_type].format(i) for i in range(LAYERS)]
    base = run_hooked(model, hooks)
    layer, head = 1, 2
    comp = next(c for c in comps if c.name == f"layer{layer}.head{head}")
    out_name = OUT_PROJ[model_type].format(layer) + ".weight"
    assert all(f".{layer}." in n for n in comp.masks)  # nothing of the other layer
    gqa = model_type in ("llama", "mistral")
    group = [2, 3] if gqa else [head]  # query heads 2 and 3 share kv head 1
    # element count: q,k,v rows of the head (+ biases) and its columns of the output projection
    bias = 1 if any(n.endswith("bias") for n in comp.masks) else 0  # Mistral has no Q/K/V biases
    assert bias or model_type == "mistral"
    assert comp.num_elements == 3 * D * (HIDDEN + bias) + D * HIDDEN  # GQA: its kv head's D rows of K and of V

    # 1. zero the head's Q, K, V slices: its value vectors vanish, so its attention output is exactly 0; the other
    #    heads (outside its kv group) and the other layer's heads are untouched, bit for bit
    got = run_hooked(zeroed(model, comp.masks, keep=lambda n: n != out_name), hooks)
    pre, pre0 = got[hooks[layer]][0], base[hooks[layer]][0]
    assert torch.equal(head_slices(pre, group), torch.zeros_like(head_slices(pre, group)))
    others = [h for h in range(HEADS) if h not in group]
    assert torch.equal(head_slices(pre, others), head_slices(pre0, others))
    assert torch.equal(got[hooks[0]][0], base[hooks[0]][0])
    if gqa:  # the head's own query rows alone change that head only
        q_only = run_hooked(zeroed(model, comp.masks, keep=lambda n: "q_proj" in n), hooks)[hooks[layer]][0]
        assert not torch.allclose(head_slices(q_only, [head]), head_slices(pre0, [head]))
        rest = [h for h in range(HEADS) if h != head]
        assert torch.equal(head_slices(q_only, rest), head_slices(pre0, rest))

    # 2. zero the head's slice of the output projection: the projection's input is unchanged and its output is the
    #    original projection of that input with the head's part removed
    got = run_hooked(zeroed(model, comp.masks, keep=lambda n: n == out_name), hooks)
    pre, out = got[hooks[layer]]
    assert torch.equal(pre, base[hooks[layer]][0])
    without = pre.clone().view(*pre.shape[:-1], HEADS, D)
    without[..., head, :] = 0
    expected = project(model_type, model.get_submodule(OUT_PROJ[model_type].format(layer)),
                       without.view(pre.shape))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, base[hooks[layer]][1])


@pytest.mark.parametrize("model_type", ARCHS)
def test_mlp_and_layer_presets_and_neuron_entries(model_type):
    model = tiny(model_type)
    mlps = resolve_components(model, ["mlps", "layers", "all"])
    names = [c.name for c in mlps]
    assert names == ["layer0.mlp", "layer1.mlp", "layer0", "layer1", "all"]
    layer1 = next(c for c in mlps if c.name == "layer1")
    in_layer1 = {n for n, _ in model.named_parameters() if f".{1}." in n and (".layers." in n or ".h." in n)}
    assert set(layer1.masks) == in_layer1 and all(bool(m.all()) for m in layer1.masks.values())
    assert mlps[-1].masks is None

    down = MLP_DOWN[model_type].format(1)
    (neur,) = resolve_components(model, [{"name": "n", "param_filter": r"\.1\.mlp\.", "neurons": [5, 7]}])
    base = run_hooked(model, [down])[down]
    # zero the neurons' input weights: exactly those hidden units become 0 (act(0) = 0, or act(0)·0 when gated)
    hidden = run_hooked(zeroed(model, neur.masks, keep=lambda n: not n.startswith(down)), [down])[down][0]
    assert torch.equal(hidden[..., [5, 7]], torch.zeros_like(hidden[..., [5, 7]]))
    keep = [i for i in range(hidden.shape[-1]) if i not in (5, 7)]
    assert torch.equal(hidden[..., keep], base[0][..., keep])
    # zero their output weights: the down projection ignores those units
    x, out = run_hooked(zeroed(model, neur.masks, keep=lambda n: n.startswith(down)), [down])[down]
    x2 = x.clone()
    x2[..., [5, 7]] = 0
    torch.testing.assert_close(out, project(model_type, model.get_submodule(down), x2), rtol=1e-5, atol=1e-6)


def test_custom_entries_on_any_model_and_clear_errors():
    model = tiny("gpt_neox")
    (whole,) = resolve_components(model, [{"name": "emb", "param_filter": "embed_in"}])
    assert whole.num_elements == 64 * HIDDEN
    (h,) = resolve_components(model, [{"name": "h", "param_filter": r"layers\.0\.attention\.(query|dense\.w)",
                                       "heads": [0, 3]}])
    assert h.num_elements == 2 * (3 * D * (HIDDEN + 1) + D * HIDDEN)
    with pytest.raises(ValueError, match="no head layout"):
        resolve_components(model, [{"name": "x", "param_filter": r"layers\.0\.", "heads": [0]}])
    with pytest.raises(ValueError, match=r"head\(s\) \[4\] out of range"):
        resolve_components(model, [{"name": "x", "param_filter": r"layers\.0\.attention\.query", "heads": [4]}])
    with pytest.raises(ValueError, match="matches no parameter"):
        resolve_components(model, [{"name": "x", "param_filter": "nothing"}])
    with pytest.raises(ValueError, match="unknown preset 'heads'"):
        validate_spec("heads")
    with pytest.raises(ValueError, match="needs 'name' and 'param_filter'"):
        validate_spec([{"name": "x"}])


def test_unsupported_architecture_is_refused_naming_it():
    import transformers as T

    opt = T.AutoModelForCausalLM.from_config(T.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16))
    with pytest.raises(ValueError, match=r"model type 'opt' has no known head/MLP layout \(supported: gpt_neox, gpt2"):
        resolve_components(opt, "attention_heads")
    # whole-tensor entries still work there
    (c,) = resolve_components(opt, [{"name": "l0", "param_filter": r"layers\.0\."}])
    assert c.num_elements > 0
