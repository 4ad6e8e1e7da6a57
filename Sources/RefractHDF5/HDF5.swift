// MARK: - HDF5 reading (skeleton; filled in by the HDF5 work)

import CHDF5

public enum HDF5Library {
    /// The loaded libhdf5's version, major.minor.release.
    public static var version: String {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        _ = H5get_libversion(&major, &minor, &release)
        return "\(major).\(minor).\(release)"
    }
}
