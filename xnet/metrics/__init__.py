"""Per-image restoration metrics under the published protocols."""
from xnet.metrics.image import image_metrics, psnr, ssim

__all__ = ["image_metrics", "psnr", "ssim"]
