#!/usr/bin/env bash
# A held-out set of 60 real photographs, each with one clear subject (animals, household objects and
# tools, a person, a flower...), for evaluating salient-object cut-outs. None comes from a package
# the training corpus (scripts/training_corpus.sh) or the demo (scikit-image) uses. Sources, pinned:
#   gcompris-qt-data 3.1-2 (Debian bookworm)   GPL-3+ for the package (/usr/share/doc/gcompris-qt-data/
#       copyright). The photos are Wikimedia Commons / Flickr photos under CC0-1.0, public domain,
#       CC-BY-2.0, CC-BY-3.0 or CC-BY-SA-4.0, with author, source and licence per file in the upstream
#       README next to them inside the .rcc archives (copied to WORK/licences/). Debian's copyright
#       file still describes the images of older GCompris releases for these folders.
#       erase/ (1920x1080), explore_world_animals/ and explore_farm_animals/ (about 1024x768):
#       animals; categorization/ others/ and tools/ (320 px on the long side): objects and tools.
#   lomiri-wallpapers-16.04 20.04.0-2 (Debian)  per file in its copyright: Picture_0B_by_freespace and
#       friends_by_Aitzol_Berasategi CC-BY-4.0, free_by_Peter_Nerlich CC-BY-SA-4.0,
#       seeding_by_Clements_Engelhardt CC0-1.0
#   python-matplotlib-data 3.6.3-1 (Debian)     grace_hopper.jpg; the package: matplotlib licence (BSD
#       compatible, PSF based)
#   python3-sklearn 1.2.1+dfsg-1 (Debian)       flower.jpg, china.jpg; the package BSD-3-Clause; the two
#       photos CC-BY-2.0 (Flickr, sklearn/datasets/images/README.txt)
#   python3-scipy 1.10.1-2 (Debian)             scipy/misc/face.dat (the raccoon), under its Files: *
#       BSD-3-clause; stored as raw RGB, written out as PNG
#   imgaug 0.4.0 (PyPI wheel, py2.py3-none-any) quokka.jpg; the wheel's metadata: License: MIT
# GCompris keeps its images in Qt resource archives (.rcc); the reader below takes them out, and the
# WebP files become PNG. Output names: <package>_<file stem>.<ext>.
# Usage: bash scripts/heldout_photos.sh [WORK_DIR] [OUT_DIR]   (needs apt-get, root not required for
# `apt-get download`; PyPI through pip; .venv with Pillow and numpy, as scripts/demo.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${1:-heldout-src}")
OUT=$(realpath -m "${2:-heldout/photos}")
mkdir -p "$WORK/debs" "$WORK/wheels" "$WORK/licences" "$OUT"
(cd "$WORK/debs" && apt-get download gcompris-qt-data=3.1-2 lomiri-wallpapers-16.04=20.04.0-2 \
   python-matplotlib-data=3.6.3-1 python3-sklearn=1.2.1+dfsg-1 python3-scipy=1.10.1-2)
.venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$WORK/wheels" imgaug==0.4.0
echo "ce61e65b4eb7405fc62c1b0a79d2fa92fd47f763aaecb65152d29243592111f9  $WORK/wheels/imgaug-0.4.0-py2.py3-none-any.whl" \
  | sha256sum -c --quiet
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
R="$WORK/root/usr"

# GCompris: <archive>.rcc:<path inside it>, chosen by eye for a clear subject.
A=gcompris/src/activities
GC=()
for n in alpaca butterfly caterpillar chamaeleon cheetah crab dolphin flying_fox gorilla gosling horse \
         kingfisher kitten penguin red_panda rhinoceros squirrel toucan; do
  GC+=("erase.rcc:$A/erase/resource/$n.webp"); done
for n in bison hedgehog koala moose panda polar_bear scarlet_macaw; do
  GC+=("explore_world_animals.rcc:$A/explore_world_animals/resource/animals/$n.webp"); done
for n in cat dog owl pig sheep; do
  GC+=("explore_farm_animals.rcc:$A/explore_farm_animals/resource/animals/$n.webp"); done
for n in bucket buffetset bulb chair cup pan plate spoons volleyball weighingMachine; do
  GC+=("categorization.rcc:$A/categorization/resource/images/others/$n.webp"); done
for n in cuttingTool hammer2 measuringTape2 measuringTape5 measuringTape6 multimeter2 nailCutter scissors3 \
         screwDriver1 spray wrench; do
  GC+=("categorization.rcc:$A/categorization/resource/images/tools/$n.webp"); done

.venv/bin/python - "$R/share/gcompris-qt/rcc" "$OUT" "$WORK/licences" "${GC[@]}" <<'EOF'
"""Take files out of Qt binary resource archives (.rcc, format versions 1-3) and save them as PNG."""
import io, os, struct, sys, zlib
from PIL import Image

def rcc_files(path):
    b = open(path, 'rb').read()
    assert b[:4] == b'qres', path
    version, tree, data, names = struct.unpack('>IIII', b[4:20])
    size = 22 if version >= 2 else 14
    def name(off):
        n, = struct.unpack('>H', b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode('utf-16-be')
    out, stack = {}, [(0, '')]
    while stack:
        i, prefix = stack.pop()
        o = tree + i * size
        name_off, flags = struct.unpack('>IH', b[o:o + 6])
        path_ = prefix + name(name_off) if i else ''
        if flags & 2:                                       # directory
            count, first = struct.unpack('>II', b[o + 6:o + 14])
            stack += [(c, path_ + '/' if i else '') for c in range(first, first + count)]
            continue
        off, = struct.unpack('>I', b[o + 10:o + 14])
        n, = struct.unpack('>I', b[data + off:data + off + 4])
        raw = b[data + off + 4:data + off + 4 + n]
        if flags & 1: raw = zlib.decompress(raw[4:])       # qCompress: 4-byte length, then zlib
        assert not flags & 4, f'{path_}: zstd-compressed entries are not supported'
        out[path_] = raw
    return out

rcc_dir, out_dir, lic_dir, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
archives, written = {}, set()
for item in wanted:
    archive, inner = item.split(':', 1)
    if archive not in archives: archives[archive] = rcc_files(os.path.join(rcc_dir, archive))
    files = archives[archive]
    readme = os.path.join(os.path.dirname(inner), 'README')
    with open(os.path.join(lic_dir, readme.replace('/', '_')), 'wb') as f: f.write(files[readme])
    dest = os.path.join(out_dir, 'gcompris-qt-data_' + os.path.splitext(os.path.basename(inner))[0] + '.png')
    assert dest not in written, f'two photos named {dest}'
    written.add(dest)
    Image.open(io.BytesIO(files[inner])).convert('RGB').save(dest)
EOF

for n in Picture_0B_by_freespace free_by_Peter_Nerlich friends_by_Aitzol_Berasategi seeding_by_Clements_Engelhardt; do
  cp "$R/share/backgrounds/$n.jpg" "$OUT/lomiri-wallpapers-16.04_$n.jpg"; done
cp "$R/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg" "$OUT/python-matplotlib-data_grace_hopper.jpg"
for n in flower china; do
  cp "$R/lib/python3/dist-packages/sklearn/datasets/images/$n.jpg" "$OUT/python3-sklearn_$n.jpg"; done
.venv/bin/python - "$R/lib/python3/dist-packages/scipy/misc/face.dat" "$OUT/python3-scipy_face.png" <<'EOF'
import bz2, sys
import numpy as np
from PIL import Image
face = np.frombuffer(bz2.decompress(open(sys.argv[1], 'rb').read()), np.uint8).reshape(768, 1024, 3)
Image.fromarray(face).save(sys.argv[2])
EOF
.venv/bin/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("imgaug/quokka.jpg"))' \
  "$WORK/wheels/imgaug-0.4.0-py2.py3-none-any.whl" "$OUT/imgaug_quokka.jpg"
for f in "$R"/share/doc/{gcompris-qt-data,lomiri-wallpapers-16.04,python-matplotlib-data,python3-sklearn,python3-scipy}/copyright; do
  cp "$f" "$WORK/licences/$(basename "$(dirname "$f")").copyright"; done
cp "$R/lib/python3/dist-packages/sklearn/datasets/images/README.txt" "$WORK/licences/sklearn_images_README.txt"
echo "$(ls "$OUT" | wc -l) photos in $OUT"
