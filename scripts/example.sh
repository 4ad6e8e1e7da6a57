#!/usr/bin/env bash
# Sets up the machine, builds Refract (release) and runs the main job offline on the example
# checkpoint shipped with the tests: embed and classify the example images, decompose their
# embeddings exactly into per-layer, per-head and per-token contributions (a run directory),
# export the run as .npy files, compute it again as two parts at once and merge them (docs/Cluster.md), run the mean-ablation study, label the last layer's heads
# with text (TextSpan), draw token heatmaps, segment a small ImageNet-Segmentation-format file
# zero-shot, retrieve images by chosen heads, and run the Waterbirds spurious-cue study on a
# synthetic metadata.csv; then the same for a timm Swin: its head, its features, the
# decomposition in the official convention and the layer-ablation curve.
# The example model has random weights (it exists to test parity), so its predictions are
# arbitrary; point --model at a real checkpoint (e.g. openai/clip-vit-base-patch16 in your
# Hugging Face cache) for meaningful ones.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release --product refract
bin=.build/release/refract
model=Tests/Fixtures/models/openclip-tiny
inputs=Tests/Fixtures/models/inputs
out=${REFRACT_EXAMPLE_OUT:-out/example}
mkdir -p "$out"

"$bin" env
echo
"$bin" embed-images --model "$model" --output "$out/image_embeddings.npy" "$inputs"
"$bin" embed-texts --model "$model" --texts "$inputs/texts.txt" --output "$out/text_embeddings.npy"
"$bin" classify --model "$model" --classes "$inputs/classes.txt" --templates "$inputs/templates.txt" --top-k 3 "$inputs"
echo
# A labelled image list: image i gets class i mod 5 (the example has no real labels).
mapfile -t classes < "$inputs/classes.txt"
{
    echo "path,label,y"
    i=0
    for f in "$inputs"/*.png; do echo "$PWD/$f,${classes[$((i % ${#classes[@]}))]},$(( (i / 2) % 2 ))"; i=$((i + 1)); done
} > "$out/images.csv"
rm -rf "$out/run" "$out/run-npy" "$out/run-1t" "$out/run-1t-npy" "$out/ablation" "$out/textspan" "$out/heatmap" "$out/segment" "$out/retrieve" "$out/spurious"
"$bin" decompose --model "$model" --output "$out/run" --tokens last:1 "$out/images.csv"
"$bin" export --run "$out/run" --format npy --output "$out/run-npy"
# The same run split across machines (here: two processes at once, as two Slurm array tasks or two
# pods of a Kubernetes Indexed Job would run it; docs/Cluster.md), then merged into one run; its
# export equals the single process's, byte for byte.
rm -rf "$out/parts" "$out/run-merged" "$out/run-merged-npy"
for k in 0 1; do
  "$bin" decompose --model "$model" --output "$out/parts/part-$k" --part "$k/2" --continue --shard-size 1 --threads 1 \
      --tokens last:1 "$out/images.csv" &
done
wait
"$bin" decompose --model "$model" --output "$out/run-1t" --shard-size 1 --threads 1 --tokens last:1 "$out/images.csv" 2>/dev/null
"$bin" merge --output "$out/run-merged" "$out/parts"/part-*
"$bin" export --run "$out/run-merged" --format npy --output "$out/run-merged-npy"
"$bin" export --run "$out/run-1t" --format npy --output "$out/run-1t-npy" 2>/dev/null
for f in "$out/run-merged-npy"/*.npy; do cmp -s "$f" "$out/run-1t-npy/$(basename "$f")" || { echo "merged run differs: $f" >&2; exit 1; }; done
echo "merged run equals the single-process run (every .npy byte for byte)"
rm -rf "$out/run-1t" "$out/run-1t-npy"
"$bin" ablate --run "$out/run" --classes "$inputs/classes.txt" --templates "$inputs/templates.txt" --output "$out/ablation"
# TextSpan with the example texts as the description pool (text embeddings cached under out/).
REFRACT_CACHE_DIR="$out/cache" "$bin" textspan --run "$out/run" --descriptions "$inputs/texts.txt" \
    --output "$out/textspan" --layers last:1 --per-head 3 --classes "$inputs/classes.txt"
REFRACT_CACHE_DIR="$out/cache" "$bin" heads --run "$out/run" --text "a photo taken at night" --top 3
echo
# Token heatmaps: one panel per text, every head of every layer.
REFRACT_CACHE_DIR="$out/cache" "$bin" heatmap --model "$model" --text "a photo of a dog" --text "a photo taken at night" \
    --output "$out/heatmap" "$inputs"/*.png
# Zero-shot segmentation of a 3-image file in the ImageNet-Segmentation format (MATLAB v7.3 / HDF5).
REFRACT_CACHE_DIR="$out/cache" "$bin" segment --model "$model" --dataset Tests/Fixtures/segment/data/gtsegs_ijcv.mat \
    --classes "$inputs/classes.txt" --templates "$inputs/templates.txt" --save-images 3 --output "$out/segment"
# Property-based retrieval: the images whose heads 1.0 and 1.1 (last layer) write what they write for image 0.
"$bin" retrieve --run "$out/run" --index 0 --heads 1.0,1.1 --top 3 --output "$out/retrieve"
# Spurious cues on a synthetic Waterbirds layout: y and place assigned to the example images.
{
    echo "img_filename,y,split,place"
    i=0
    for f in "$inputs"/*.png; do echo "$(basename "$f"),$(( (i / 2) % 2 )),2,$(( i % 2 ))"; i=$((i + 1)); done
} > "$out/metadata.csv"
REFRACT_CACHE_DIR="$out/cache" "$bin" spurious --run "$out/run" --metadata "$out/metadata.csv" --classes landbird,waterbird \
    --ablate 1.0,1.2 --random-draws 3 --output "$out/spurious"
echo
# Beyond CLIP: a timm checkpoint (a tiny Swin with shifted windows and two patch merges, random
# weights): its own head, its pre-logits features, the decomposition in the official code's
# convention from block 3 (stage 1, block 1), its components as .npy + JSON, and the
# layer-ablation curve through its head (the example classes name its first five outputs).
timm=Tests/Fixtures/timm/swin-tiny
{ cat "$inputs/classes.txt"; for i in 5 6 7 8 9; do echo "other $i"; done; } > "$out/swin_classes.txt"
rm -rf "$out/swin-run" "$out/swin-run-npy" "$out/swin-ablation"
"$bin" classify --model "$timm" --classes "$out/swin_classes.txt" --top-k 3 "$inputs"
"$bin" embed-images --model "$timm" --output "$out/swin_features.npy" "$inputs"
"$bin" decompose --model "$timm" --convention balasubramanian2024 --from-block 3 --output "$out/swin-run" "$out/images.csv"
"$bin" export --run "$out/swin-run" --format npy --output "$out/swin-run-npy"
"$bin" ablate --run "$out/swin-run" --classes "$out/swin_classes.txt" --output "$out/swin-ablation"
# CompAlign: the Swin run's components mapped into the tiny CLIP's space (the CLIP embeddings of the
# same images as targets), then the CLIP-space applications on the timm run.
rm -rf "$out/swin-align" "$out/swin-textspan" "$out/swin-score" "$out/swin-retrieve" "$out/swin-probe" "$out/swin-spurious"
"$bin" embed-images --model "$model" --output "$out/clip_targets.npy" "$inputs"
"$bin" align --run "$out/swin-run" --clip-embeddings "$out/clip_targets.npy" --clip "$model" --output "$out/swin-align" \
    --batch-size 2 --epochs 20 --held-out 0.25
REFRACT_CACHE_DIR="$out/cache" "$bin" textspan --run "$out/swin-run" --align "$out/swin-align" --descriptions "$inputs/texts.txt" \
    --output "$out/swin-textspan" --per-head 2 --components attn.3.0,attn.3.1,mlp.3
REFRACT_CACHE_DIR="$out/cache" "$bin" score --run "$out/swin-run" --align "$out/swin-align" --property location \
    --texts beach,forest,desert,sea --against "animal=a dog,a cat" --top 5 --output "$out/swin-score"
REFRACT_CACHE_DIR="$out/cache" "$bin" retrieve --run "$out/swin-run" --align "$out/swin-align" --score "$out/swin-score" \
    --top-components 3 --text "a photo of a beach" --top 3 --output "$out/swin-retrieve"
# A Waterbirds-style probe: y (0 landbird, 1 waterbird) from the image list's column.
"$bin" probe --run "$out/swin-run" --output "$out/swin-probe" --label-column y --classes landbird,waterbird --epochs 20
REFRACT_CACHE_DIR="$out/cache" "$bin" spurious --run "$out/swin-run" --metadata "$out/metadata.csv" --probe "$out/swin-probe" \
    --align "$out/swin-align" --ablate-by-text location --top 3 --random-draws 3 --output "$out/swin-spurious"
echo
echo "Outputs in $out: image_embeddings.npy (+ .paths.txt), text_embeddings.npy,"
echo "  run/ (manifest.json + safetensors shards), run-npy/ (the run as .npy files),"
echo "  parts/ (the run in 2 parts) and run-merged/ (refract merge of them), run-merged-npy/,"
echo "  ablation/ (ablation.json, ablation.csv, ablation.png),"
echo "  textspan/ (textspan.json, textspan.md, textspan.html), heatmap/ (PNG + .npy per image),"
echo "  segment/ (metrics.json, per_image.csv, overlays/), retrieve/ (retrieval.json, retrieval.html),"
echo "  spurious/ (spurious.json, spurious.md); timm (Swin): swin_features.npy, swin-run/,"
echo "  swin-run-npy/ (components.npy + components.json), swin-ablation/, swin-align/ (CompAlign maps,"
echo "  manifest.json, loss.png), swin-textspan/, swin-score/ (score.json/md/html), swin-retrieve/,"
echo "  swin-probe/ (a linear probe), swin-spurious/"
echo
echo "Explore the run in a browser (a local web page, offline; Ctrl-C to stop):"
echo "  $bin serve --run $out/run --textspan $out/textspan"
