#!/usr/bin/env bash
# Sets up the machine, builds Refract (release) and runs the main job offline on the example
# checkpoint shipped with the tests: embed the example images, then zero-shot classify them.
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
echo "Outputs in $out: image_embeddings.npy (+ .paths.txt), text_embeddings.npy"
