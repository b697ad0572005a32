#!/usr/bin/env bash
# The training corpus of the packaged u2netp-product and u2netp-s, from Debian bookworm packages (origin and licences in
# each package's /usr/share/doc/<package>/copyright):
#   tuxpaint-stamps-default 2022.06.04-1  photographic RGBA cut-outs (stamps), for composites
#   opencv-doc 4.6.0+dfsg-12              OpenCV's sample photos (examples/data)
#   plasma-workspace-wallpapers 5.27.5-2, mate-backgrounds 1.26.0-1, ukui-wallpapers 20.04.3-1.1
#                                         wallpapers: real photos, and backdrops for composites
# Usage: bash scripts/training_corpus.sh [WORK_DIR] [CORPUS_DIR] [HELDOUT_DIR]   (needs apt-get; root not
# required for `apt-get download`). The demo photos (scikit-image) are NOT in it: they stay held out.
# Every 5th cut-out and every 5th photo (sorted) is held out of the corpus: HELDOUT_DIR/composites
# gets 60 composites made only of those, and HELDOUT_DIR/groups/composites 60 group shots, for evaluation (scripts/heldout_photos.sh adds
# HELDOUT_DIR/photos, real photos from other packages).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${1:-corpus-src}")
OUT=$(realpath -m "${2:-corpus}")
HELDOUT=$(realpath -m "${3:-heldout}")
mkdir -p "$WORK/debs" "$WORK/photos" "$WORK/stamps"
(cd "$WORK/debs" && apt-get download tuxpaint-stamps-default=2022.06.04-1 opencv-doc=4.6.0+dfsg-12 \
   'plasma-workspace-wallpapers=4:5.27.5-2' mate-backgrounds=1.26.0-1 ukui-wallpapers=20.04.3-1.1)
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
R="$WORK/root/usr/share"
cp -r "$R/tuxpaint/stamps/." "$WORK/stamps/"
rm -rf "$WORK/stamps/symbols" "$WORK/stamps/town/roadsigns" "$WORK/stamps/town/flags"
# OpenCV's photos (not its calibration boards, logos, text or synthetic test patterns).
for f in "$R"/doc/opencv-doc/examples/data/*.jpg "$R"/doc/opencv-doc/examples/data/{basketball1,box_in_scene,chicky_512,graf1,pic1,pic3,pic5,rubberwhale1,smarties}.png; do
  case "$(basename "$f")" in left*|right*|LinuxLogo*|WindowsLogo*|text_*|ellipses*|licenseplate*) continue;; esac
  cp "$f" "$WORK/photos/opencv_$(basename "$f")"
done
# One file per Plasma wallpaper: its largest rendition.
for d in "$R"/wallpapers/*/contents/images; do
  f=$(ls -S "$d" | head -1); cp "$d/$f" "$WORK/photos/plasma_$(basename "$(dirname "$(dirname "$d")")").${f##*.}"
done
for f in "$R"/backgrounds/mate/*/*; do
  case "$(basename "$f")" in Elephants_*) continue;; esac
  cp "$f" "$WORK/photos/mate_$(basename "$f")"
done
for f in "$R"/backgrounds/*.jpg; do cp "$f" "$WORK/photos/ukui_$(basename "$f")"; done
.venv/bin/python -m cvmatte.distill.corpus --cutouts "$WORK/stamps" --backgrounds "$WORK/photos" \
  --photos "$WORK/photos" --count 480 --split train -o "$OUT"
.venv/bin/python -m cvmatte.distill.corpus --cutouts "$WORK/stamps" --backgrounds "$WORK/photos" \
  --count 60 --seed 1 --split heldout -o "$HELDOUT"
# 60 group shots (2-3 held-out cut-outs side by side): a model that drops one part of a
# multi-part subject is seen here (issue 23).
.venv/bin/python -m cvmatte.distill.corpus --cutouts "$WORK/stamps" --backgrounds "$WORK/photos" \
  --count 60 --seed 2 --split heldout --objects 2-3 -o "$HELDOUT/groups"
# 120 more real photos (teacher-labelled only, never backdrops) from other packages.
bash scripts/extra_photos.sh "$WORK/extra" "$OUT/photos"
