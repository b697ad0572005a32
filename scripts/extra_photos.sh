#!/usr/bin/env bash
# Extra real photographs for the distillation corpus, to be labelled by the teacher model: 120 photos,
# most with one clear subject (objects, animals, plants, food, people), some scenes and landscapes.
# None comes from a package that the training corpus (scripts/training_corpus.sh) or the held-out set
# (scripts/heldout_photos.sh) uses. Sources, Debian bookworm, pinned (licence as stated in
# /usr/share/doc/<package>/copyright):
#   plasma-workspace-data 4:5.27.5-2+deb12u2      20  user avatar photos (kcms/users/avatars/photos/*):
#                                                     CC0-1.0 (Pexels photos, one .license file each)
#   gnome-control-center-data 1:43.6-2~deb12u1    15  user avatar photos (pixmaps/faces, 512 px):
#                                                     Files: * "GPL-2+ and GPL-3+ and LGPL-2.1+ and
#                                                     LGPL-2+ and Expat and CC0-1.0"
#   tuxpaint-data 1:0.9.28-sdl2-1                 14  Tux Paint photo templates: Files: * GPL-2+
#   palapeli-data 4:22.12.3-1                      5  jigsaw puzzle photos: Files: * GPL-2+
#   scribus-template 1.2.4.1-6                     7  photos of templates br2, cal2, menu2 (Riku Leino):
#                                                     placed into the public domain by their author
#   gramps 5.1.5-1                                 5  historic portraits of the example family tree:
#                                                     Files: * GPL-2+
#   sddm-theme-maldives 0.19.0-5                   1  background.jpg: CC-BY-3.0
#   lxqt-themes 1.2.0-1                            9  photo wallpapers: Files: * LGPL-2.1+ (the upstream
#                                                     wallpapers/License file says CC-BY-SA-3.0)
#   tuxtype-data 1.8.3-5.1                         8  Tux Typing photos: GPL-2 (the images: own work under
#                                                     the GPL, or public-domain NOAA / FWS photos)
#   python-kivy-examples 2.1.0-1                   4  Kivy example photos: Files: * Expat
#   libjs-cropper 1.2.2-1.1                        2  test photos: Files: * BSD
#   libjs-jquery-colorbox 1.6.4-1.1                5  example photos: Files: * MIT
#   libvigraimpex-doc 1.11.1+dfsg-11               1  bears.jpg: Files: * Expat
#   puzzle-jigsaw 1.0.2+git20201007.527c529+dfsg-4+b1   2  samples/*: CC0-1.0
#   qtbase5-examples 5.15.8+dfsg-11+deb12u3        3  examples/*: BSD-3-clause
#   qtdeclarative5-examples 5.15.8+dfsg-3          2  examples/*: BSD-3-clause
#   inkscape 1.2.2-2+b1                            1  pixmaps/ticotico.jpg: "GNU GPL; some portions
#                                                     public domain"
#   afterstep-data 2.2.12-15                       1  desktop/tiles/rose512.jpg: Files: * GPL-2+
#   xteddy 2.2-5                                   1  xtrouble.png (a toy, RGBA cut-out, put on white):
#                                                     Files: * GPL-2+
#   cimg-examples 3.2.1+dfsg-1                     1  examples/img/parrot.ppm: Files: * CeCILL
#   scratch 1.4.0.6~dfsg1-6.1                     13  Scratch 1.4 background photos (480x360):
#                                                     Files: Help/* Media/* Projects: CC-BY-SA-3.0
# About 154 MB of .deb files. The arch-specific ones (puzzle-jigsaw, qtbase5-examples,
# qtdeclarative5-examples, inkscape, xteddy) are pinned as built for amd64. Point-release versions
# (+deb12uN) leave the mirror when superseded; they stay on snapshot.debian.org.
# Output: OUT_DIR/extra_<package>_<stem>.jpg; a JPEG whose longer side is at most 1280 px is copied
# byte for byte, anything else is made RGB (alpha put on white), scaled to 1280 px on the longer side
# at most, and written as JPEG quality 92. Every listed file must exist and have its shorter side
# >= 256 px, or the script stops.
# Usage: bash scripts/extra_photos.sh [WORK_DIR] [OUT_DIR]   (needs apt-get; root not required for
# `apt-get download`; .venv with Pillow, as scripts/demo.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath -m "${1:-corpus-src/extra}")
OUT=$(realpath -m "${2:-corpus/photos}")
PY=.venv/bin/python
PKGS=(
  plasma-workspace-data=4:5.27.5-2+deb12u2
  gnome-control-center-data=1:43.6-2~deb12u1
  tuxpaint-data=1:0.9.28-sdl2-1
  palapeli-data=4:22.12.3-1
  scribus-template=1.2.4.1-6
  gramps=5.1.5-1
  sddm-theme-maldives=0.19.0-5
  lxqt-themes=1.2.0-1
  tuxtype-data=1.8.3-5.1
  python-kivy-examples=2.1.0-1
  libjs-cropper=1.2.2-1.1
  libjs-jquery-colorbox=1.6.4-1.1
  libvigraimpex-doc=1.11.1+dfsg-11
  puzzle-jigsaw=1.0.2+git20201007.527c529+dfsg-4+b1
  qtbase5-examples=5.15.8+dfsg-11+deb12u3
  qtdeclarative5-examples=5.15.8+dfsg-3
  inkscape=1.2.2-2+b1
  afterstep-data=2.2.12-15
  xteddy=2.2-5
  cimg-examples=3.2.1+dfsg-1
  scratch=1.4.0.6~dfsg1-6.1
)
mkdir -p "$WORK/debs" "$WORK/root" "$OUT"

deb_of() {  # the .deb file of PKG=VERSION in $WORK/debs (apt writes ':' as '%3a'), or nothing
  local pkg=${1%%=*} ver=${1#*=}
  compgen -G "$WORK/debs/${pkg}_${ver//:/%3a}_*.deb" | head -n 1 || true
}
missing=()
for spec in "${PKGS[@]}"; do [ -n "$(deb_of "$spec")" ] || missing+=("$spec"); done
if [ ${#missing[@]} -gt 0 ]; then
  (cd "$WORK/debs" && apt-get download "${missing[@]}")
fi
for spec in "${PKGS[@]}"; do
  pkg=${spec%%=*}
  rm -rf "$WORK/root/$pkg"; mkdir -p "$WORK/root/$pkg"
  dpkg-deb -x "$(deb_of "$spec")" "$WORK/root/$pkg"
done

# The selection: <package> <path or glob under its root> [output stem]. Chosen by eye: photographs
# only (no drawings, renders, screenshots, textures without a subject, or filtered variants).
SEL=$(cat <<'LIST'
plasma-workspace-data usr/share/plasma/avatars/photos/*.png
gnome-control-center-data usr/share/pixmaps/faces/bicycle.jpg
gnome-control-center-data usr/share/pixmaps/faces/book.jpg
gnome-control-center-data usr/share/pixmaps/faces/calculator.jpg
gnome-control-center-data usr/share/pixmaps/faces/cat.jpg
gnome-control-center-data usr/share/pixmaps/faces/coffee2.jpg
gnome-control-center-data usr/share/pixmaps/faces/flower2.jpg
gnome-control-center-data usr/share/pixmaps/faces/gamepad.jpg
gnome-control-center-data usr/share/pixmaps/faces/guitar2.jpg
gnome-control-center-data usr/share/pixmaps/faces/headphones.jpg
gnome-control-center-data usr/share/pixmaps/faces/hummingbird.jpg
gnome-control-center-data usr/share/pixmaps/faces/mountain.jpg
gnome-control-center-data usr/share/pixmaps/faces/plane.jpg
gnome-control-center-data usr/share/pixmaps/faces/surfer.jpg
gnome-control-center-data usr/share/pixmaps/faces/tomatoes.jpg
gnome-control-center-data usr/share/pixmaps/faces/tree.jpg
tuxpaint-data usr/share/tuxpaint/templates/cliff.jpg
tuxpaint-data usr/share/tuxpaint/templates/corn_maze.jpg
tuxpaint-data usr/share/tuxpaint/templates/jellyfish.jpg
tuxpaint-data usr/share/tuxpaint/templates/lighthouse.jpg
tuxpaint-data usr/share/tuxpaint/templates/mossy_log.jpg
tuxpaint-data usr/share/tuxpaint/templates/ocean_waves.jpg
tuxpaint-data usr/share/tuxpaint/templates/redwoods_above.jpg
tuxpaint-data usr/share/tuxpaint/templates/sheep.jpg
tuxpaint-data usr/share/tuxpaint/templates/spiders_web.jpg
tuxpaint-data usr/share/tuxpaint/templates/sun_behind_clouds.jpg
tuxpaint-data usr/share/tuxpaint/templates/sun_behind_leaves.jpg
tuxpaint-data usr/share/tuxpaint/templates/trees_above.jpg
tuxpaint-data usr/share/tuxpaint/templates/trees_at_dusk.jpg
tuxpaint-data usr/share/tuxpaint/templates/wool_mill_machine.jpg
palapeli-data usr/share/palapeli/collection/*.jpg
scribus-template usr/share/scribus/templates/br2/brightness.jpg
scribus-template usr/share/scribus/templates/br2/halfmoon.jpg
scribus-template usr/share/scribus/templates/br2/moon.jpg
scribus-template usr/share/scribus/templates/br2/nature.jpg
scribus-template usr/share/scribus/templates/br2/sunset.jpg
scribus-template usr/share/scribus/templates/cal2/moon.jpg cal2-moon
scribus-template usr/share/scribus/templates/menu2/pizza.jpg
gramps usr/share/doc/gramps/example/gramps/1897_expeditionsmannschaft_rio_a.jpg
gramps usr/share/doc/gramps/example/gramps/654px-Aksel_Andersson.jpg Aksel_Andersson
gramps usr/share/doc/gramps/example/gramps/Alimehemet.jpg
gramps usr/share/doc/gramps/example/gramps/E_W_Dahlgren.jpg
gramps usr/share/doc/gramps/example/gramps/Gunnlaugur_Larusson_-_Yawn.jpg
sddm-theme-maldives usr/share/sddm/themes/maldives/background.jpg maldives
lxqt-themes usr/share/lxqt/wallpapers/Butterfly-Kenneth-Wimer.jpg
lxqt-themes usr/share/lxqt/wallpapers/Valendas.png
lxqt-themes usr/share/lxqt/wallpapers/after-the-rain.jpg
lxqt-themes usr/share/lxqt/wallpapers/appleflower.png
lxqt-themes usr/share/lxqt/wallpapers/butterfly.png
lxqt-themes usr/share/lxqt/wallpapers/drop.png
lxqt-themes usr/share/lxqt/wallpapers/flowers.png
lxqt-themes usr/share/lxqt/wallpapers/fog.jpg
lxqt-themes usr/share/lxqt/wallpapers/this-is-not-windows.jpg
tuxtype-data usr/share/tuxtype/images/hidden.jpg
tuxtype-data usr/share/tuxtype/images/kcas0.jpg
tuxtype-data usr/share/tuxtype/images/kcas2.jpg
tuxtype-data usr/share/tuxtype/images/kcas6.jpg
tuxtype-data usr/share/tuxtype/images/kcas8.jpg
tuxtype-data usr/share/tuxtype/images/kcas9.jpg
tuxtype-data usr/share/tuxtype/images/kcas10.jpg
tuxtype-data usr/share/tuxtype/images/kcas11.jpg
python-kivy-examples usr/share/kivy-examples/demo/pictures/images/faust_github.jpg
python-kivy-examples usr/share/kivy-examples/demo/pictures/images/Wall.jpg
python-kivy-examples usr/share/kivy-examples/canvas/kiwi.jpg
python-kivy-examples usr/share/kivy-examples/widgets/cityCC0.png
libjs-cropper usr/share/doc/libjs-cropper/tests/castleMed.jpg castle
libjs-cropper usr/share/doc/libjs-cropper/tests/poppy.jpg
libjs-jquery-colorbox usr/share/doc/libjs-jquery-colorbox/examples/content/daisy@2x.jpg daisy
libjs-jquery-colorbox usr/share/doc/libjs-jquery-colorbox/examples/content/marylou.jpg
libjs-jquery-colorbox usr/share/doc/libjs-jquery-colorbox/examples/content/ohoopee1.jpg
libjs-jquery-colorbox usr/share/doc/libjs-jquery-colorbox/examples/content/ohoopee2.jpg
libjs-jquery-colorbox usr/share/doc/libjs-jquery-colorbox/examples/content/ohoopee3.jpg
libvigraimpex-doc usr/share/doc/libvigraimpex-dev/html/bears.jpg
puzzle-jigsaw usr/share/puzzle-jigsaw/samples/cat-animal-cat-portrait-mackerel.jpg cat
puzzle-jigsaw usr/share/puzzle-jigsaw/samples/pexels-photo-302304.jpeg tiger
qtbase5-examples usr/lib/*/qt5/examples/widgets/painting/composition/flower.jpg
qtbase5-examples usr/lib/*/qt5/examples/widgets/graphicsview/weatheranchorlayout/images/place.jpg
qtbase5-examples usr/lib/*/qt5/examples/widgets/painting/affine/bg1.jpg sea-rock
qtdeclarative5-examples usr/lib/*/qt5/examples/quick/customitems/scrollbar/pics/niagara_falls.jpg
qtdeclarative5-examples usr/lib/*/qt5/examples/quick/views/listview/content/pics/fruit-salad.jpg
inkscape usr/share/inkscape/pixmaps/ticotico.jpg
afterstep-data usr/share/afterstep/desktop/tiles/rose512.jpg rose
xteddy usr/share/xteddy/xtrouble.png
cimg-examples usr/share/doc/cimg-dev/examples/img/parrot.ppm
scratch usr/share/scratch/Media/Backgrounds/Indoors/kitchen.jpg
scratch usr/share/scratch/Media/Backgrounds/Nature/flower-bed.jpg
scratch usr/share/scratch/Media/Backgrounds/Nature/garden-rock.jpg
scratch usr/share/scratch/Media/Backgrounds/Nature/tree.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/bench-with-view.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/building-fireproof.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/castle.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/houses.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/mansion.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/silos.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/the-movies.jpg
scratch usr/share/scratch/Media/Backgrounds/Outdoors/wooden-house.jpg
scratch usr/share/scratch/Media/Backgrounds/Sports/basketball-court1-a.jpg
LIST
)

EXTRA_SEL="$SEL" "$PY" - "$WORK/root" "$OUT" <<'EOF'
"""Copy or convert the selected photos into OUT as extra_<package>_<stem>.jpg."""
import glob, os, re, shutil, sys
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = None
root, out = sys.argv[1], sys.argv[2]
MAX_SIDE, MIN_SIDE = 1280, 256
sel = os.environ["EXTRA_SEL"]
written = set()
for line in sel.splitlines():
    if not line.strip():
        continue
    pkg, pattern, *stem = line.split()
    paths = sorted(glob.glob(os.path.join(root, pkg, pattern)))
    if not paths:
        sys.exit(f"extra_photos: nothing matches {pkg} {pattern}")
    if stem and len(paths) != 1:
        sys.exit(f"extra_photos: a stem needs exactly one file: {pkg} {pattern}")
    for path in paths:
        name = stem[0] if stem else os.path.splitext(os.path.basename(path))[0]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
        dest = os.path.join(out, f"extra_{pkg}_{name}.jpg")
        if dest in written:
            sys.exit(f"extra_photos: two files map to {dest}")
        written.add(dest)
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < MIN_SIDE:
                sys.exit(f"extra_photos: {path} is {w}x{h}, shorter side < {MIN_SIDE}")
            if im.format == "JPEG" and max(w, h) <= MAX_SIDE:
                shutil.copyfile(path, dest)
                continue
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
            if max(im.size) > MAX_SIDE:
                s = MAX_SIDE / max(im.size)
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                               Image.LANCZOS)
            im.save(dest, "JPEG", quality=92)
print(f"extra_photos: {len(written)} photos in {out}")
EOF
