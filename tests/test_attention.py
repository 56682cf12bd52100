"""Prompt-to-prompt attention control (hf_genzoo.attention) on tiny Stable Diffusion components: the processors against
diffusers' AttnProcessor2_0, installation and restoring, the store, each edit through a stock StableDiffusionPipeline
(the source image is the pipeline's own; no injection gives the plain edited image; each edit changes the output),
the injected maps token by token, local blending, composition, and bad input."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from hf_genzoo.attention import (
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    AttentionStore,
    EmptyControl,
    LocalBlend,
    PromptToPromptAttnProcessor,
    align_tokens,
    attention_layers,
    refinement_mapper,
    register_attention_control,
    word_token_indices,
)
from hf_genzoo.attention.attention_processor import attention_probabilities
from tiny_components import tiny_text_to_image_components, tiny_unet

STEPS = 4
SOURCE, SWAP = "a red circle", "a blue circle"  # a word swap
SHORT, LONGER = "a circle", "a red circle"  # a refinement: "red" is added
CROSS_LAYERS = 7  # the tiny UNet's cross-attention layers: 3 at 8×8, 4 at 4×4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def components():
    return tiny_text_to_image_components()


@pytest.fixture
def pipe(components):
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    yield pipe
    pipe.unet.set_attn_processor(AttnProcessor2_0())


def noise(n=1, seed=0, shape=(8, 8)):
    return torch.randn(n, 4, *shape, generator=torch.Generator().manual_seed(seed))


def generate(pipe, prompts, controller=None, latents=None, num_images_per_prompt=1, **kwargs):
    """Images (np) of `prompts` from the same noise per image index: the source and its edits start alike."""
    num_prompts = 1 if isinstance(prompts, str) else len(prompts)
    latents = noise(num_images_per_prompt) if latents is None else latents
    if controller is not None:
        register_attention_control(pipe.unet, controller)
    else:
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    return pipe(
        prompts,
        num_inference_steps=STEPS,
        num_images_per_prompt=num_images_per_prompt,
        latents=latents.repeat(num_prompts, 1, 1, 1),
        output_type="np",
        callback_on_step_end=None if controller is None else controller.step_callback,
        **kwargs,
    ).images


def unet_inputs(unet, batch=4, shape=(8, 8), tokens=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(batch, 4, *shape, generator=g),
        timestep=torch.tensor(500),
        encoder_hidden_states=torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g),
    )


# ---- processors and installation -------------------------------------------------------------------------------


def test_layers_are_placed_by_the_unets_structure(pipe):
    layers = attention_layers(pipe.unet)
    assert sum(layer.is_cross for layer in layers.values()) == CROSS_LAYERS
    by_block = {
        name.split(".attentions")[0]: (layer.downsample_factor, layer.resolution) for name, layer in layers.items()
    }
    assert by_block == {
        "down_blocks.0": (1, (8, 8)),
        "down_blocks.1": (2, (4, 4)),
        "mid_block": (2, (4, 4)),
        "up_blocks.0": (2, (4, 4)),
        "up_blocks.1": (1, (8, 8)),
    }
    wide = attention_layers(pipe.unet, latent_shape=(6, 10))
    assert {layer.resolution for layer in wide.values()} == {(6, 10), (3, 5)}
    assert wide["mid_block.attentions.0.transformer_blocks.0.attn2"].map_shape((7, 9)) == (4, 5)


@pytest.mark.parametrize("shape, tokens", [((8, 8), 16), ((6, 10), 7)])
@pytest.mark.parametrize(
    "make_controller", [EmptyControl, lambda: AttentionStore(store_self=True)], ids=["empty", "store"]
)
def test_processors_match_attn_processor_2_0(pipe, make_controller, shape, tokens):
    """Any latent shape, token length and number of heads (2 and 4 here): the explicit softmax path is SDPA's."""
    unet, inputs = pipe.unet, unet_inputs(pipe.unet, shape=shape, tokens=tokens)
    with torch.no_grad():
        expected = unet(**inputs).sample
        controller = make_controller()
        layers = register_attention_control(unet, controller)
        assert len(layers) == len(unet.attn_processors)  # every layer materialises its maps
        actual = unet(**inputs).sample
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    if isinstance(controller, AttentionStore):
        maps = controller.step_store
        assert len(maps) == len(layers)
        for name, layer in layers.items():
            height, width = layer.map_shape(shape)
            keys = tokens if layer.is_cross else height * width
            assert maps[name].shape == (2, height * width, keys)  # the conditional half only, averaged over heads
            torch.testing.assert_close(maps[name].sum(-1), torch.ones(2, height * width))


def test_register_and_restore_round_trip(pipe):
    unet, inputs = pipe.unet, unet_inputs(pipe.unet)
    with torch.no_grad():
        expected = unet(**inputs).sample
        layers = register_attention_control(unet, AttentionStore())  # cross-attention only
        processors = unet.attn_processors
        assert set(layers) == {name for name, layer in attention_layers(unet).items() if layer.is_cross}
        for key, processor in processors.items():
            name = key.removesuffix(".processor")
            assert type(processor) is (PromptToPromptAttnProcessor if name in layers else AttnProcessor2_0)
            if name in layers:
                assert processor.layer_name == name and processor.place_in_unet == layers[name].place_in_unet

        unet.set_attn_processor(AttnProcessor2_0())
        assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())
        torch.testing.assert_close(unet(**inputs).sample, expected, rtol=0, atol=0)

        store = AttentionStore(store_self=True)
        layers = register_attention_control(unet, store, resolutions=(4,))  # a second install replaces the first
        assert len(layers) == 8 and all(layer.resolution == (4, 4) for layer in layers.values())
        assert sum(type(p) is PromptToPromptAttnProcessor for p in unet.attn_processors.values()) == 8
        torch.testing.assert_close(unet(**inputs).sample, expected, rtol=0, atol=1e-6)
        assert set(store.step_store) == set(layers)


def test_installing_on_no_layer_is_an_error(pipe):
    before = pipe.unet.attn_processors
    with pytest.raises(ValueError, match=r"resolution 32 matches no attention layer.*\(4, 4\), \(8, 8\)"):
        register_attention_control(pipe.unet, AttentionStore(), resolutions=(8, 32))
    with pytest.raises(ValueError, match="AttentionStore matches no attention layer"):
        register_attention_control(pipe.unet, AttentionStore(store_cross=False))
    with pytest.raises(ValueError, match=r"resolution \(4, 8\) matches no attention layer"):
        replace = AttentionReplace([SOURCE, SWAP], pipe.tokenizer, STEPS)
        register_attention_control(pipe.unet, replace, resolutions=[(4, 8)])
    self_attention_only = tiny_unet(
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        mid_block_type=None,
    )
    assert len(self_attention_only.attn_processors) > 0
    with pytest.raises(ValueError, match="UNet2DConditionModel has no cross-attention layer"):
        register_attention_control(self_attention_only, AttentionStore(store_self=True))
    assert {k: type(p) for k, p in pipe.unet.attn_processors.items()} == {k: type(p) for k, p in before.items()}


# ---- the store through a pipeline --------------------------------------------------------------------------------


def test_attention_store_through_the_pipeline(pipe):
    store = AttentionStore(store_self=True, average_only=False, store_device="cpu", store_dtype=torch.float16)
    images = generate(pipe, [SOURCE, SWAP], store, num_images_per_prompt=2)
    first_images = generate(pipe, [SOURCE, SWAP])  # prompt-major rows: image 0 of each prompt
    np.testing.assert_allclose(images[::2], first_images, rtol=0, atol=1e-5)

    assert store.cur_step == STEPS and len(store.step_maps) == STEPS and store.latent_shape == (8, 8)
    for name, average in store.get_average_attention().items():
        assert average.dtype == torch.float16 and average.device.type == "cpu" and average.shape[0] == 4
        steps = torch.stack([step[name].float() for step in store.step_maps])
        torch.testing.assert_close(average.float(), steps.mean(0), rtol=0, atol=2e-3)

    cross = store.aggregate(4)  # (rows, h, w, tokens) over the 4×4 layers: 4 rows = 2 prompts × 2 images
    assert cross.shape == (4, 4, 4, 16) and cross.dtype == torch.float32
    torch.testing.assert_close(cross.sum(-1), torch.ones(4, 4, 4), rtol=0, atol=1e-2)
    assert store.aggregate(8, places=("up",)).shape == (4, 8, 8, 16)
    assert store.aggregate().shape == (4, 8, 8, 16)  # every layer, resized to the largest map
    assert store.aggregate(4, is_cross=False).shape == (4, 4, 4, 16)  # self-attention: keys are the 16 pixels
    assert store.aggregate(4, step=0).shape == (4, 4, 4, 16)
    with pytest.raises(ValueError, match="no stored maps at resolution 2"):
        store.aggregate(2)

    # a wide latent, 8×12: maps 8×12 and 4×6; only the 4-pixel layers are stored (memory)
    store = AttentionStore(store_dtype=torch.float16)
    register_attention_control(pipe.unet, store, resolutions=(4,))
    pipe(SOURCE, height=16, width=24, num_inference_steps=STEPS, callback_on_step_end=store.step_callback)
    assert store.latent_shape == (8, 12) and len(store.attention_store) == 4
    assert store.aggregate(4).shape == (1, 4, 6, 16)


def test_step_counting_is_checked(pipe):
    store = AttentionStore()
    generate(pipe, SOURCE, store)
    with pytest.raises(RuntimeError, match=r"got step 0 but the controller is at step 4: call controller.reset\(\)"):
        pipe(SOURCE, num_inference_steps=STEPS, latents=noise(), callback_on_step_end=store.step_callback)
    store.reset()
    assert store.cur_step == 0 and not store.attention_store
    with pytest.raises(RuntimeError, match="ran twice in step 0: pass callback_on_step_end=controller.step_callback"):
        pipe(SOURCE, num_inference_steps=STEPS, latents=noise())  # no callback: the step never advances

    replace = AttentionReplace([SOURCE, SWAP], pipe.tokenizer, STEPS)
    with pytest.raises(ValueError, match="runs 5 steps but AttentionReplace was built with num_inference_steps=4"):
        register_attention_control(pipe.unet, replace)
        pipe([SOURCE, SWAP], num_inference_steps=5, latents=noise(2), callback_on_step_end=replace.step_callback)
    replace = AttentionReplace([SOURCE, SWAP], pipe.tokenizer, STEPS, do_classifier_free_guidance=False)
    with pytest.raises(ValueError, match="do_classifier_free_guidance=True but the controller"):
        generate(pipe, [SOURCE, SWAP], replace)


# ---- edits through a stock StableDiffusionPipeline --------------------------------------------------------------


def edit_cases(tokenizer):
    blend = LocalBlend([SOURCE, SWAP], tokenizer, ("red", "blue"), threshold=0.97, dilation=0)
    return {
        "replace": ([SOURCE, SWAP], AttentionReplace([SOURCE, SWAP], tokenizer, STEPS)),
        "replace per word": (
            [SOURCE, SWAP],
            AttentionReplace([SOURCE, SWAP], tokenizer, STEPS, cross_replace_steps={"default_": 0.8, "blue": 0.4}),
        ),
        "refine": ([SHORT, LONGER], AttentionRefine([SHORT, LONGER], tokenizer, STEPS)),
        "reweight": ([SOURCE, SOURCE], AttentionReweight([SOURCE, SOURCE], tokenizer, STEPS, {"red": 4.0})),
        "local blend": ([SOURCE, SWAP], AttentionReplace([SOURCE, SWAP], tokenizer, STEPS, local_blend=blend)),
        "refine + reweight": (
            [SHORT, LONGER],
            AttentionReweight(
                [SHORT, LONGER],
                tokenizer,
                STEPS,
                {"red": 4.0},
                prev_controller=AttentionRefine([SHORT, LONGER], tokenizer, STEPS),
            ),
        ),
    }


@pytest.mark.parametrize(
    "case, num_images_per_prompt",
    [(case, 1) for case in ("replace", "replace per word", "refine", "reweight", "local blend", "refine + reweight")]
    + [("replace", 2), ("local blend", 2)],  # num_images_per_prompt: prompt-major rows, image k edits image k
)
def test_edit_keeps_the_source_image_and_changes_the_edit(pipe, case, num_images_per_prompt):
    prompts, controller = edit_cases(pipe.tokenizer)[case]
    n = num_images_per_prompt
    latents = noise(n, seed=1)
    edited = generate(pipe, prompts, controller, latents, num_images_per_prompt=n)
    source = generate(pipe, prompts[0], latents=latents, num_images_per_prompt=n)
    plain_edit = generate(pipe, prompts[1], latents=latents, num_images_per_prompt=n)
    assert edited.shape == (2 * n, 16, 16, 3)
    np.testing.assert_allclose(edited[:n], source, rtol=0, atol=1e-5)  # the source is the pipeline's own image
    assert np.abs(edited[n:] - plain_edit).max() > 1e-3  # the edit is not the edited prompt's plain image
    if case == "reweight":  # same prompts: the plain edit is the source; re-weighting "red" changes it
        assert np.abs(edited[n:] - source).max() > 1e-3


@pytest.mark.parametrize("edit", [AttentionReplace, AttentionRefine])
def test_no_injection_gives_the_plain_edited_image(pipe, edit):
    prompts = [SOURCE, SWAP] if edit is AttentionReplace else [SHORT, LONGER]
    controller = edit(prompts, pipe.tokenizer, STEPS, cross_replace_steps=0.0, self_replace_steps=0.0)
    edited = generate(pipe, prompts, controller)
    np.testing.assert_allclose(edited[1:], generate(pipe, prompts[1]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(edited[:1], generate(pipe, prompts[0]), rtol=0, atol=1e-5)


def test_without_classifier_free_guidance(pipe):
    controller = AttentionReplace([SOURCE, SWAP], pipe.tokenizer, STEPS, do_classifier_free_guidance=False)
    edited = generate(pipe, [SOURCE, SWAP], controller, guidance_scale=1.0)
    np.testing.assert_allclose(edited[:1], generate(pipe, SOURCE, guidance_scale=1.0), rtol=0, atol=1e-5)
    assert np.abs(edited[1:] - generate(pipe, SWAP, guidance_scale=1.0)).max() > 1e-3


def real_cross_attention(pipe, prompts, layer="down_blocks.0.attentions.0.transformer_blocks.0.attn2"):
    """Cross-attention maps (2 × prompts, heads, 64, 16) of a real layer of the tiny UNet for `prompts` under
    classifier-free guidance (unconditional rows first)."""
    attn = pipe.unet.get_submodule(layer)
    ids = pipe.tokenizer(["", ""] + prompts, padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]  # (4, 16, 16)
        hidden = torch.randn(4, 64, 8, generator=torch.Generator().manual_seed(0))
        query = attn.to_q(hidden).view(4, 64, attn.heads, -1).transpose(1, 2)  # (4, heads, 64, d)
        key = attn.to_k(text).view(4, 16, attn.heads, -1).transpose(1, 2)  # (4, heads, 16, d)
        return attention_probabilities(attn, query, key)  # (4, heads, 64, 16)


def run_steps(controller, probs, layer="down_blocks.0.attentions.0.transformer_blocks.0.attn2", is_cross=True):
    """The maps each step's attention uses: the controller on `probs` at steps 0 .. STEPS - 1."""
    used = []
    for step in range(STEPS):
        used.append(controller(probs, is_cross, "down", layer))
        controller.step_callback(None, step, None, {})
    return used


def test_word_swap_injects_the_sources_maps_exactly(pipe):
    tokenizer = pipe.tokenizer
    probs = real_cross_attention(pipe, [SOURCE, SWAP])
    controller = AttentionReplace([SOURCE, SWAP], tokenizer, STEPS, cross_replace_steps={"default_": 1.0, "blue": 0.5})
    register_attention_control(pipe.unet, controller)
    (blue,) = word_token_indices(SWAP, "blue", tokenizer)
    others = [j for j in range(16) if j != blue]
    for step, used in enumerate(run_steps(controller, probs)):
        assert torch.equal(used[:3], probs[:3])  # unconditional rows and the source untouched
        assert torch.equal(used[3][..., others], probs[2][..., others])  # M̂_t = M_t, every step (fraction 1)
        swapped = probs[2][..., blue] if step < STEPS // 2 else probs[3][..., blue]  # "blue": the first half only
        assert torch.equal(used[3][..., blue], swapped)
        assert not torch.equal(probs[2][..., blue], probs[3][..., blue])


def test_self_attention_injection_on_small_maps(pipe):
    def installed_self_layers(**kwargs):
        controller = AttentionReplace([SOURCE, SWAP], pipe.tokenizer, STEPS, **kwargs)
        layers = register_attention_control(pipe.unet, controller)
        return sorted({layer.resolution for layer in layers.values() if not layer.is_cross}), len(layers)

    assert installed_self_layers() == ([(4, 4), (8, 8)], 14)  # the paper's 16: every map of the tiny UNet
    assert installed_self_layers(self_replace_max_resolution=4) == ([(4, 4)], 11)
    assert installed_self_layers(self_replace_max_resolution=None, self_replace_steps=0.0) == ([], CROSS_LAYERS)

    controller = AttentionReplace(
        [SOURCE, SWAP], pipe.tokenizer, STEPS, self_replace_steps=0.5, self_replace_max_resolution=(4, 4)
    )
    register_attention_control(pipe.unet, controller)
    probs = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0)).softmax(-1)  # (B, heads, Q, Q)
    small = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
    for step, used in enumerate(run_steps(controller, probs, small, is_cross=False)):
        assert torch.equal(used[:3], probs[:3])
        assert torch.equal(used[3], probs[2] if step < STEPS // 2 else probs[3])  # the source's self-attention
    controller.reset()
    large = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"  # 8×8: above the limit, never injected
    assert all(torch.equal(used, probs) for used in run_steps(controller, probs, large, is_cross=False))


def test_refine_and_reweight_maps(pipe):
    tokenizer = pipe.tokenizer
    probs = real_cross_attention(pipe, [SHORT, LONGER])
    assert align_tokens([2, 4, 18, 3], [2, 4, 21, 18, 3]) == [0, 1, None, 2, 3]  # <s> a (red) circle </s>
    mapper, aligned = refinement_mapper(SHORT, LONGER, tokenizer)
    assert mapper.tolist() == [0, 1, 0, 2, 3] + list(range(4, 15))  # padding follows the source's padding
    assert aligned.tolist() == [True, True, False] + [True] * 13

    refine = AttentionRefine([SHORT, LONGER], tokenizer, STEPS, cross_replace_steps=0.5)
    register_attention_control(pipe.unet, refine)
    for step, used in enumerate(run_steps(refine, probs)):
        expected = probs[2][..., mapper] if step < STEPS // 2 else probs[3]
        expected[..., 2] = probs[3][..., 2]  # "red" is new: its own map
        assert torch.equal(used[3], expected) and torch.equal(used[:3], probs[:3])

    reweight = AttentionReweight(
        [SHORT, LONGER], tokenizer, STEPS, {"red": 3.0}, prev_controller=refine, cross_replace_steps=0.5
    )
    register_attention_control(pipe.unet, reweight)
    refine.reset()
    for step, (used, refined) in enumerate(zip(run_steps(reweight, probs), run_steps(refine, probs))):
        scale = torch.tensor([1.0, 1.0, 3.0 if step < STEPS // 2 else 1.0] + [1.0] * 13)
        torch.testing.assert_close(used[3], refined[3] * scale, rtol=0, atol=0)


def test_local_blend(pipe):
    tokenizer = pipe.tokenizer
    without = generate(pipe, [SOURCE, SWAP], AttentionReplace([SOURCE, SWAP], tokenizer, STEPS))

    def blended(threshold):
        blend = LocalBlend([SOURCE, SWAP], tokenizer, ("red", "blue"), threshold=threshold, dilation=0)
        controller = AttentionReplace([SOURCE, SWAP], tokenizer, STEPS, local_blend=blend)
        return generate(pipe, [SOURCE, SWAP], controller), controller

    nothing, _ = blended(1.0)  # an empty mask: every latent pixel of the edit is the source's
    np.testing.assert_allclose(nothing[1], nothing[0], rtol=0, atol=1e-6)
    everything, _ = blended(0.0)  # a full mask: no blending
    np.testing.assert_allclose(everything, without, rtol=0, atol=1e-5)
    partial, controller = blended(0.97)
    assert np.abs(partial[1] - without[1]).max() > 1e-3 and np.abs(partial[1] - partial[0]).max() > 1e-3

    latents = noise(2, seed=3)
    masks = controller.local_blend.get_mask(controller.attention_store, controller.layers, latents)  # (2, 1, 8, 8)
    alpha = (masks[0] | masks[1]).expand(4, 8, 8)  # α = B(M̄_red) ∪ B(M̄*_blue)
    assert 0 < alpha.float().mean() < 1
    out = controller.local_blend(latents, controller.attention_store, controller.layers, STEPS - 1, STEPS)
    assert torch.equal(out[0], latents[0])
    assert torch.equal(out[1][alpha], latents[1][alpha]) and torch.equal(out[1][~alpha], latents[0][~alpha])


def test_composition_with_unit_weights_is_the_inner_edit(pipe):
    tokenizer = pipe.tokenizer
    refine = generate(pipe, [SHORT, LONGER], AttentionRefine([SHORT, LONGER], tokenizer, STEPS))
    inner = AttentionRefine([SHORT, LONGER], tokenizer, STEPS)
    unit = AttentionReweight([SHORT, LONGER], tokenizer, STEPS, {"red": 1.0}, prev_controller=inner)
    np.testing.assert_allclose(generate(pipe, [SHORT, LONGER], unit), refine, rtol=0, atol=1e-6)
    replace = generate(pipe, [SOURCE, SWAP], AttentionReplace([SOURCE, SWAP], tokenizer, STEPS))
    unit = AttentionReweight([SOURCE, SWAP], tokenizer, STEPS, {"blue": 1.0})
    np.testing.assert_allclose(generate(pipe, [SOURCE, SWAP], unit), replace, rtol=0, atol=1e-6)


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda t: AttentionReplace([SHORT, LONGER], t, STEPS), r"same number of tokens.*'' -> 'red'.*use AttentionRefine"),
        (lambda t: AttentionReweight([SHORT, LONGER], t, STEPS, {"red": 2.0}), "same number of tokens"),
        (lambda t: LocalBlend([SOURCE, SWAP], t, ("red", "red")), "local blend word 'red' is not in prompt 1, 'a blue circle'"),
        (lambda t: LocalBlend([SOURCE, SWAP], t, ("red",)), "one entry per prompt"),
        (lambda t: AttentionReplace([SOURCE, SWAP], t, STEPS, cross_replace_steps=1.5), r"cross_replace_steps must be .*1\.5"),
        (lambda t: AttentionReplace([SOURCE, SWAP], t, STEPS, cross_replace_steps=-0.1), r"cross_replace_steps must be .*-0\.1"),
        (
            lambda t: AttentionReplace([SOURCE, SWAP], t, STEPS, cross_replace_steps={"blue": (0.6, 0.2)}),
            r"cross_replace_steps\['blue'\] must be",
        ),
        (
            lambda t: AttentionReplace([SOURCE, SWAP], t, STEPS, cross_replace_steps={"red": 0.5}),
            "word 'red' is in none of the edited prompts",
        ),
        (lambda t: AttentionReplace([SOURCE, SWAP], t, STEPS, self_replace_steps=2), "self_replace_steps must be"),
        (lambda t: AttentionReweight([SOURCE, SWAP], t, STEPS, {"square": 2.0}), "equalizer word 'square' is not in"),
        (lambda t: AttentionReweight([SOURCE, SWAP], t, STEPS, {"tree": 2.0}), "word 'tree' is not in the tokenizer's"),
        (lambda t: AttentionReplace([SOURCE], t, STEPS), "a source prompt and at least one edit"),
        (
            lambda t: AttentionReweight(
                [SOURCE, SWAP], t, STEPS, {"blue": 2.0}, prev_controller=AttentionRefine([SHORT, LONGER], t, STEPS)
            ),
            "prev_controller must be an edit of the same prompts",
        ),
    ],
)
def test_bad_input(components, build, message):
    with pytest.raises(ValueError, match=message):
        build(components["tokenizer"])
