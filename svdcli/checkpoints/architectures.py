"""What each released checkpoint contains: architecture configs, and where each component sits in a single file.

Architectures (what the loader can tell from the tensors):
  svd               SVD, SVD-XT, SVD-XT 1.1 — temporal VAE decoder
  svd_image_decoder the `*_image_decoder` files — frame-wise decoder with quant convs
  sv3d_u, sv3d_p    SV3D — frame-wise decoder without quant convs, vector width 256 / 1280
  sv4d              SV4D — SV3D_p's parts, plus motion attention in the U-Net (whose video blocks are time_mix_*)
  sv4d2             SV4D 2.0, 4 views — and a camera embedding, a separate motion mixer, the "3-D" view attention
  sv4d2_8views      SV4D 2.0, 8 views — the same tensors as sv4d2, without the 3-D view attention
SVD, SVD-XT and SVD-XT 1.1 have identical tensors; which one a file is matters only to sampling defaults (presets).
sv4d2 and sv4d2_8views also have identical tensors, but different networks: the file's name (as released), our own
files' metadata or the preset tells them apart.
"""

from dataclasses import dataclass, replace

from ..models.clip import CLIPConfig
from ..models.unet import UNetConfig
from ..models.vae import VAEConfig

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
DECODER_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class Architecture:
    name: str
    unet: UNetConfig
    vae: VAEConfig
    clip: CLIPConfig
    vae_encoder_prefix: str  # the conditioner's autoencoder, whose encoder makes the conditioning latent
    # Further copies of that autoencoder in the conditioner (SV4D's cond_view and cond_motion embedders): never read,
    # except in place of the first where a file lacks it.
    encoder_copies: tuple[str, ...] = ()

    @property
    def vector_layout(self) -> tuple[tuple[str, int], ...]:
        """The pieces of the vector conditioning y, in order, with their embedding widths."""
        if self.name == "sv3d_u":
            return (("cond_aug", 256),)
        if self.name == "sv3d_p" or self.unet.motion_attention:  # camera angles: SV3D_p and the SV4D family
            return (("cond_aug", 256), ("polar_rad", 512), ("azimuth_rad", 512))
        return (("fps_id", 256), ("motion_bucket_id", 256), ("cond_aug", 256))

    def single_file_prefixes(self) -> dict[str, dict[str, str]]:
        """component -> {our module prefix: single-file prefix}."""
        enc = self.vae_encoder_prefix
        vae = {"encoder.": enc + "encoder.", "quant_conv.": enc + "quant_conv.",
               "decoder.": DECODER_PREFIX + "decoder."}
        if self.vae.post_quant_conv:
            vae["post_quant_conv."] = DECODER_PREFIX + "post_quant_conv."
        return {"unet": {"": UNET_PREFIX}, "vae": vae, "image_encoder": {"": CLIP_PREFIX}}

    def single_file_key(self, component: str, key: str) -> str:
        """The single-file name of one of our tensor names (the longest of our prefixes that the name starts with
        decides, as "" prefixes everything)."""
        ours, theirs = max(((o, t) for o, t in self.single_file_prefixes()[component].items() if key.startswith(o)),
                           key=lambda pair: len(pair[0]))
        return theirs + key[len(ours):]

    def skipped_prefixes(self) -> tuple[str, ...]:
        """Tensors of a single file that inference never uses; they are skipped without being read."""
        enc = self.vae_encoder_prefix
        return ("conditioner.embedders.0.open_clip.model.token_embedding",
                "conditioner.embedders.0.open_clip.model.positional_embedding",
                "conditioner.embedders.0.open_clip.model.ln_final.",
                "conditioner.embedders.0.open_clip.model.text_projection",
                "conditioner.embedders.0.open_clip.model.logit_scale",
                enc + "decoder.", enc + "post_quant_conv.",
                DECODER_PREFIX + "encoder.", DECODER_PREFIX + "quant_conv.",
                *(copy for copy in self.encoder_copies if copy != enc))


_SVD_ENC = "conditioner.embedders.3.encoder."
_SV3D_ENC = "conditioner.embedders.1.encoder."
_SV4D_ENCODERS = tuple(f"conditioner.embedders.{i}.encoder." for i in (1, 4, 5))  # cond_frames, cond_view, cond_motion
_SV4D_UNET = UNetConfig(adm_in_channels=1280, motion_attention=True)
_SV4D2_UNET = replace(_SV4D_UNET, camera_embedding=True, separate_motion_mixer=True)

ARCHITECTURES = {
    "svd": Architecture("svd", UNetConfig(), VAEConfig(), CLIPConfig(), _SVD_ENC),
    "svd_image_decoder": Architecture("svd_image_decoder", UNetConfig(),
                                      VAEConfig(temporal_decoder=False, post_quant_conv=True), CLIPConfig(), _SVD_ENC),
    "sv3d_u": Architecture("sv3d_u", UNetConfig(adm_in_channels=256), VAEConfig(temporal_decoder=False),
                           CLIPConfig(), _SV3D_ENC),
    "sv3d_p": Architecture("sv3d_p", UNetConfig(adm_in_channels=1280), VAEConfig(temporal_decoder=False),
                           CLIPConfig(), _SV3D_ENC),
    "sv4d": Architecture("sv4d", _SV4D_UNET, VAEConfig(temporal_decoder=False), CLIPConfig(), _SV3D_ENC,
                         _SV4D_ENCODERS),
    "sv4d2": Architecture("sv4d2", replace(_SV4D2_UNET, attention_3d=True), VAEConfig(temporal_decoder=False),
                          CLIPConfig(), _SV3D_ENC, _SV4D_ENCODERS),
    "sv4d2_8views": Architecture("sv4d2_8views", _SV4D2_UNET, VAEConfig(temporal_decoder=False), CLIPConfig(),
                                 _SV3D_ENC, _SV4D_ENCODERS),
}

# Released files -> the architecture their tensors have.
RELEASED_FILES = {
    "svd.safetensors": "svd", "svd_xt.safetensors": "svd", "svd_xt_1_1.safetensors": "svd",
    "svd_image_decoder.safetensors": "svd_image_decoder", "svd_xt_image_decoder.safetensors": "svd_image_decoder",
    "sv3d_u.safetensors": "sv3d_u", "sv3d_p.safetensors": "sv3d_p",
    "sv4d.safetensors": "sv4d", "sv4d2.safetensors": "sv4d2", "sv4d2_8views.safetensors": "sv4d2_8views",
}

