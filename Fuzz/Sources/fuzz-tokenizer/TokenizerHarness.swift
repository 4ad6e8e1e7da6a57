// MARK: - Fuzz: tokenizer
//
// The bytes are text (invalid UTF-8 is decoded with replacement characters, so every input is a
// valid UTF-8 text); each line is tokenized by both flavours (open_clip and transformers, bundled
// vocabulary) as the CLI tokenizes class names, templates and description pools, and decoded back.

import Foundation
import FuzzSupport
import RefractTokenizer

private let tokenizers: [CLIPTokenizer] = {
    do {
        return [try CLIPTokenizer.openCLIPDefault(), try CLIPTokenizer.transformersDefault()]
    } catch {
        fatalError("fuzz: cannot load the bundled tokenizers: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for line in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false) {
        let line = String(String.UnicodeScalarView(line))
        for tokenizer in tokenizers {
            let row = tokenizer.tokenize(line)
            precondition(row.count == CLIPTokenizer.defaultContextLength)
            _ = tokenizer.decode(row)
        }
    }
    return 0
}
