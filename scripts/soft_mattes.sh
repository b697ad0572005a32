#!/usr/bin/env bash
# Photographic cut-outs with real soft alpha (trees, shrubs, grasses, clouds), for training and evaluating the
# tile refiner (issue 17). Source, pinned, from Debian bookworm:
#   flightgear-data-base 1:2020.3.16+dfsg-1   FlightGear's scenery textures: Textures/Trees/*.png (atlases of
#       photographed trees and shrubs), Textures/Sky/cl_*.png (photographed clouds), Scenery/Models/Trees/*.png.
#       GPL-2+ (Files: *, 1999-2017 Curtis L. Olson and the FlightGear team; /usr/share/doc/flightgear-data-base/
#       copyright, copied to OUT/).
# Every third texture (sorted) is held out whole (OUT/heldout/), the rest is OUT/train/: an atlas repeats its
# trees, so no object of a held-out texture is trained on. OUT/index.json lists each cut-out's source file.
# Usage: bash scripts/soft_mattes.sh [WORK_DIR] [OUT_DIR]   (1.3 GB download; needs apt-get, not root)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${1:-soft-mattes-src}")
OUT=$(realpath -m "${2:-soft-mattes}")
mkdir -p "$WORK/debs" "$WORK/root" "$OUT"
(cd "$WORK/debs" && apt-get download 'flightgear-data-base=1:2020.3.16+dfsg-1')
dpkg-deb --fsys-tarfile "$WORK"/debs/flightgear-data-base_*.deb | tar x -C "$WORK/root" \
  --wildcards './usr/share/games/flightgear/Textures/Trees/*' './usr/share/games/flightgear/Textures/Sky/*' \
  './usr/share/games/flightgear/Scenery/Models/Trees/*' ./usr/share/doc/flightgear-data-base/copyright
cp "$WORK/root/usr/share/doc/flightgear-data-base/copyright" "$OUT/copyright"
.venv/bin/python -m cvmatte.distill.soft_mattes "$WORK/root" -o "$OUT"
