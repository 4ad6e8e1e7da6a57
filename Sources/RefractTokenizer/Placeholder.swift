// \(t) (work in progress)
