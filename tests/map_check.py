"""What the reference checks share: comparing one of our maps with a reference map, and the
verdict over a run's frames."""
import sys

import cv2
import numpy as np


def ours(line, size):
    """The map of one metadata line, resized to `size` (w, h) as the references are."""
    c = line["cam"]
    return cv2.resize(np.array(c["data"], dtype=np.float32).reshape(c["h"], c["w"]), size)


def compare(ref, mine):
    """(Pearson correlation, both flat) of two maps of the same size; two flat maps are identical."""
    if np.ptp(ref) < 1e-6 and np.ptp(mine) < 1e-6:
        return 1.0, True
    return float(np.nan_to_num(np.corrcoef(ref.ravel(), mine.ravel())[0, 1], nan=-1.0)), False


def verdict(name, corrs, flat, min_corr, extra=""):
    """Print the summary line; exit with a FAIL line when most maps are flat on both sides (the
    agreement would prove nothing) or when a frame correlates less than `min_corr`."""
    corrs = np.array(corrs)
    worst = int(np.argmin(corrs))
    print(f"{name}: frames {len(corrs)}  correlation min {corrs.min():.4f} (frame {worst})  "
          f"mean {corrs.mean():.4f}{extra}")
    if flat > len(corrs) // 2:
        sys.exit(f"FAIL: {flat} of {len(corrs)} maps are flat on both sides: the check proves nothing")
    if corrs.min() < min_corr:
        sys.exit(f"FAIL: frame {worst} correlates {corrs[worst]:.4f} < {min_corr}")
