"""Pure-PyTorch Tora (CogVideoX-5B T2V/I2V + trajectory extractor + motion-guidance fusers).

Never imports ComfyUI; the node layer in `nodes/` adapts it. Public surface is re-exported here.
"""

from .checkpoint_files import read_state_dict
from .checkpoints import load_transformer
from .config import ToraConfig
from .errors import CheckpointError, ConfigError, GenerationInterrupted, ToraError, TrajectoryFormatError
from .flow import flow_to_rgb, flow_video_to_vae_input, render_flow
from .generation_setup import check_generation_size
from .motion_guidance import MotionGuidance, encode_flow_video, motion_from_flow, motion_from_trajectory
from .pipeline import decode_latents, encode_image_latents, generate, sample_latents
from .resample import canvas_positions
from .sampling import StepInfo, sample
from .schedule import make_schedule
from .st_dit import STDiTTransformer, load_st_transformer
from .trajectory import (
    Track,
    Trajectory,
    load_official_txt,
    load_trajectory_file,
    parse_kjnodes_coordinates,
    parse_official_txt,
    trajectory_from_json,
)
from .transformer import ToraTransformer, build_transformer
from .vae import SCALE, CogVideoXVAE, DiagonalGaussian, Tiling, VAEConfig
from .vae_loading import load_vae

__all__ = [
    "ToraConfig",
    "CheckpointError",
    "ConfigError",
    "ToraError",
    "TrajectoryFormatError",
    "ToraTransformer",
    "STDiTTransformer",
    "load_st_transformer",
    "build_transformer",
    "sample",
    "make_schedule",
    "StepInfo",
    "load_transformer",
    "read_state_dict",
    "SCALE",
    "CogVideoXVAE",
    "DiagonalGaussian",
    "Tiling",
    "VAEConfig",
    "load_vae",
    "GenerationInterrupted",
    "MotionGuidance",
    "encode_flow_video",
    "motion_from_flow",
    "motion_from_trajectory",
    "check_generation_size",
    "decode_latents",
    "encode_image_latents",
    "generate",
    "sample_latents",
    "Track",
    "Trajectory",
    "load_official_txt",
    "load_trajectory_file",
    "parse_kjnodes_coordinates",
    "parse_official_txt",
    "trajectory_from_json",
    "canvas_positions",
    "render_flow",
    "flow_to_rgb",
    "flow_video_to_vae_input",
]
