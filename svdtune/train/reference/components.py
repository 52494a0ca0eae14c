"""The reference family's parts, built from stock diffusers / transformers classes.

ref-unet is a StableDiffusionPipeline (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
CLIPTokenizer, DPM-Solver). ref-dit is a StableDiffusion3Pipeline (SD3Transformer2DModel, an MMDiT
made of nn.Linear layers like FLUX) that shares the VAE and the CLIP text encoder (used as both of
SD3's CLIP encoders, no T5). The tokenizer is a byte-level BPE trained on the world's captions.
"""

from __future__ import annotations

import copy

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                       SD3Transformer2DModel, StableDiffusion3Pipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from svdtune.data import world

MAX_TOKENS = 48
LATENT_CHANNELS = 4


def build_tokenizer(seed: int = 0) -> CLIPTokenizer:
    """Byte-level BPE (CLIP's normaliser and pre-tokeniser) in which every word of the world is one token.

    Built directly, not with `train_new_from_iterator`: the BPE trainer breaks ties in hash order,
    so its token ids change from process to process, and a text encoder trained in one process
    would read scrambled ids in the next. Each word gets merges until the tokenizer reads it as one
    token: BPE applies merges by rank, not left to right, so a word's own chain of merges is cut by
    an earlier word's ("an" inside "orange" and "triangle"); the merge is then added for the pieces
    it does read. A merge appended last cannot change words already whole. `seed` is kept for the
    recipe's signature; the vocabulary does not depend on it.
    """
    del seed
    symbols = [chr(c) for c in _byte_alphabet()]
    vocab, merges = symbols + [c + "</w>" for c in symbols], []
    special = ["<|startoftext|>", "<|endoftext|>"]

    def tokenizer() -> CLIPTokenizer:
        tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab + special)}, merges=merges)
        tok.model_max_length = MAX_TOKENS
        return tok

    for word in sorted(world.VOCABULARY):
        while len(pieces := tokenizer().tokenize(word)) > 1:
            merges.append((pieces[0], pieces[1]))
            if pieces[0] + pieces[1] not in vocab:
                vocab.append(pieces[0] + pieces[1])
    return tokenizer()


def _byte_alphabet() -> list[int]:
    """The code points GPT-2 / CLIP use for the 256 bytes (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    extra = iter(range(256, 512))
    return [b if b in printable else next(extra) for b in range(256)]


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config)


def as_clip_text_model(encoder: CLIPTextModelWithProjection) -> CLIPTextModel:
    """The same text transformer without the projection head (what StableDiffusionPipeline takes)."""
    model = CLIPTextModel(encoder.config)
    model.load_state_dict(encoder.text_model.state_dict())
    return model.to(encoder.dtype)  # a fresh model is fp32: the fp16 export would ship it at twice the size


def build_vae() -> AutoencoderKL:
    # Downsampling by 2 (48x48x3 -> 24x24x4). At 4x with this budget the VAE had not learnt
    # colours after 400 steps; at 2x it reads 98 % of colours after 150 steps.
    # 8 channels per group: with one channel per group GroupNorm erases each channel's mean,
    # which is where flat colour lives.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=world.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False,
    )


def latent_size(vae: AutoencoderKL) -> int:
    return world.IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1)


def build_unet(sample_size: int, cross_attention_dim: int) -> UNet2DConditionModel:
    # Cross-attention only at 6x6 and 3x3: a world cell is 2x2 latents at 6x6, and attention over
    # 24x24 or 12x12 tokens costs most of a step on CPU without helping composition.
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 128, 192), layers_per_block=1, norm_num_groups=16,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=32,
    )


def build_dit(sample_size: int, text_dim: int, pooled_dim: int) -> SD3Transformer2DModel:
    # Patch size 2, as SD3 / PixArt / FLUX use: 144 image tokens of 4x4 pixels. With patch size 4
    # (36 tokens of 8x8 pixels) objects that straddled a patch edge came out split in two, and
    # the evaluator counted a stray object in 65 % of single-object images. A step costs 1.5x.
    return SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=6, attention_head_dim=32, num_attention_heads=6, joint_attention_dim=2 * text_dim,
        caption_projection_dim=192, pooled_projection_dim=2 * pooled_dim, pos_embed_max_size=sample_size // 2,
        qk_norm="rms_norm",
    )


def ddpm_scheduler() -> DDPMScheduler:
    """Stable Diffusion's schedule rescaled to zero terminal SNR, with v-prediction and trailing
    timesteps (Lin et al. 2024). With SD's own schedule, 7% of the image survives at t = 999; on
    this world the UNet learned to read where objects are from that leak instead of the caption,
    and placed them at random from pure noise (position accuracy 8%, below chance)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="v_prediction", clip_sample=False,
                         rescale_betas_zero_snr=True, timestep_spacing="trailing", steps_offset=1)


def unet_pipeline(unet, vae, text_encoder, tokenizer) -> StableDiffusionPipeline:
    scheduler = DPMSolverMultistepScheduler.from_config(ddpm_scheduler().config)
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=as_clip_text_model(text_encoder), tokenizer=tokenizer,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


# ref-dit has no T5. SD3's pipeline then pads the text with max_sequence_length zero tokens
# (256 by default), which makes every step 4x slower here for nothing; the model is trained
# and called with none (world.json "pipeline_kwargs", applied by svdtune.pipelines.call_kwargs).
DIT_PIPELINE_KWARGS = {"max_sequence_length": 0}


def dit_pipeline(transformer, vae, text_encoder, tokenizer) -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder, tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )


def fp16_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to(torch.float16)
