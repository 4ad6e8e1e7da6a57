import Foundation

/// The layout of a *run*: a directory holding named per-image float tensors of a dataset,
/// computed in shards (for example every image's CLIP embedding split into contributions).
///
/// The store knows nothing about CLIP: only named tensors with a leading image axis `N`, a few
/// image-independent constants, and a self-describing manifest.
///
/// ```
/// RUN/
///   manifest.json            format, model, preprocessing, convention, dimensions, options,
///                            tensor specs, the full input list, shard size, completed shards
///                            (file, range, rows, SHA-256), skipped images, complete flag
///   constants.safetensors    image-independent tensors (e.g. a bias term `beta` [D'])
///   shard-00000.safetensors  images 0 ..< shardSize
///   shard-00001.safetensors  images shardSize ..< 2·shardSize
///   ...
/// ```
///
/// ## Shards
///
/// Shard `i` covers the fixed input range `i·shardSize ..< min((i+1)·shardSize, N)`. It holds,
/// for the images of that range that were not skipped, one tensor per spec of shape
/// `[rows] + spec.shape` (F32 or F16, as the spec says) and an I64 tensor `image_index [rows]`
/// with each row's input index. Its `__metadata__` is
/// `{"format": "refract-contributions", "run_id": <runId>, "shard": "<i>"}`. Shards are plain
/// safetensors files: `safetensors.numpy.load_file` reads them.
///
/// ## Writing and resuming
///
/// Every file is written to a hidden temporary name, synced and renamed into place. A shard is
/// recorded in the manifest (with its SHA-256) only after its file is in place, and the manifest
/// is rewritten atomically after every shard, so a killed run always has a consistent manifest.
/// ``StoreWriter/open(at:header:constants:createdBy:resume:runId:)`` with `resume: true`
/// requires the stored header (everything but the run id, creator, shards, skipped images and
/// completion) to equal the new one, removes leftovers, and continues with the next shard; the
/// result is byte-for-byte the run an uninterrupted session would have written.
///
/// ## Reading
///
/// ``StoreReader`` validates the manifest and every shard's header (tensors, dtypes, shapes,
/// run id, image index) when it opens a run, refuses incomplete runs unless asked, and returns
/// float32 tensors: whole (`[N, ...]`), by row range, or streamed one shard at a time.
/// ``StoreExport/npy(_:to:names:)`` writes plain `.npy` files, streaming.
///
/// See `docs/Store.md` for the manifest fields and loading a run from Python.
public enum StoreLayout {
    /// The manifest's file name inside a run directory.
    public static let manifestFile = "manifest.json"
    /// The constants file name inside a run directory.
    public static let constantsFile = "constants.safetensors"
    /// The name of each shard's row-index tensor.
    public static let imageIndexTensor = "image_index"
    /// The `format` value of manifests and shard metadata.
    public static let format = StoreManifest.formatName
    /// The format version this build writes and the newest it reads.
    public static let formatVersion = StoreManifest.currentFormatVersion

    /// File name of shard `index` (`shard-00012.safetensors`).
    public static func shardFile(_ index: Int) -> String { StoreManifest.shardFileName(index) }
}
