"""A seeded fuzz run of the decode stage (scripts/fuzz_decode.py has the long run): mutated JPEG, PNG, TIFF,
WebP and GIF files and EXIF blocks each give a picture or BadImage, within bounded memory."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz_decode.py"


def test_mutated_files_give_a_picture_or_bad_image_within_bounded_memory():
    out = subprocess.run([sys.executable, str(SCRIPT), "--cases", "3000", "--seed", "1", "--max-pixels", "4000000",
                          "--max-rise-mb", "96"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["findings"] == [], run["findings"]
    assert run["cases"] == 3000 and run["ok"] > 300 and run["bad_image"] > 300
    assert run["peak_rss_mb"] < 256, run
