"""Input/output of CTs, label maps and radiographs with geometry and units."""

from .ct import read_ct, read_label_volume, write_volume
from .radiograph import Radiograph, read_radiograph
from .volume import LPS_TO_RAS, Volume, VolumeGeometry

__all__ = [
    "LPS_TO_RAS",
    "Radiograph",
    "Volume",
    "VolumeGeometry",
    "read_ct",
    "read_label_volume",
    "read_radiograph",
    "write_volume",
]
