"""cvmatte: product cut-outs with CV-UNet matting engines.

    from cvmatte import Matter
    result = Matter().matte("photo.jpg")   # result.alpha, result.rgba
"""

from .api import Matter, MatteResult, MatteSettings
from .engine.errors import CvmatteError, DeviceError, ImageError, ImageTooLarge, ModelError

__version__ = "0.1.0"
__all__ = ["Matter", "MatteResult", "MatteSettings", "CvmatteError", "DeviceError", "ImageError",
           "ImageTooLarge", "ModelError", "__version__"]
