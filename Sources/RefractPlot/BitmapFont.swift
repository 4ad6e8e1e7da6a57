// MARK: - BitmapFont
//
// A 5x7 pixel font for printable ASCII (plus "…" for truncation), drawn in a 6x11 cell: one
// blank column to the right of each glyph, 7 rows above the baseline, 2 descender rows below it
// and 2 rows of line gap. Glyphs are scaled by whole numbers (2 for chart text), so text is crisp
// and needs no anti-aliasing. Every character outside the table is drawn as "?".
//
// The table below was written for this project. Each line is the character, a space, then its
// rows top to bottom ('#' ink, '.' blank); rows beyond the seventh are the descender rows.

struct BitmapFont: Sendable {
    /// Ink columns of a glyph.
    static let glyphWidth = 5
    /// Rows above the baseline (capital height).
    static let ascent = 7
    /// Rows below the baseline (g, j, p, q, y, comma).
    static let descent = 2
    /// Horizontal distance from one character to the next.
    static let advance = 6
    /// Vertical distance from one line to the next.
    static let lineHeight = 11

    /// `rows[c]` holds, for glyph `c`, one bit mask per row (bit 4 = leftmost column).
    private let rows: [Character: [UInt8]]

    static let standard = BitmapFont(table: BitmapFont.table)

    private init(table: String) {
        var rows: [Character: [UInt8]] = [:]
        for line in table.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let c = line.first else { continue }
            let fields = line.dropFirst().split(separator: " ")
            var masks: [UInt8] = []
            for field in fields {
                precondition(field.count == BitmapFont.glyphWidth, "glyph \(c): row \(field) is not 5 wide")
                var m: UInt8 = 0
                for ch in field { m = m << 1 | (ch == "#" ? 1 : 0) }
                masks.append(m)
            }
            precondition(masks.count <= BitmapFont.ascent + BitmapFont.descent, "glyph \(c) has too many rows")
            rows[c] = masks
        }
        self.rows = rows
    }

    /// The characters the table defines (printable ASCII and the ellipsis).
    var characters: Set<Character> { Set(rows.keys) }

    /// Row masks for `c` (top row first; fewer than 9 rows means the rest are blank).
    /// Characters outside the table map to "?".
    func glyph(_ c: Character) -> [UInt8] {
        rows[c] ?? rows["?"]!
    }

    /// Whether column `x` (0 = left), row `y` (0 = top, 7 = first descender row) of `c` is ink.
    func ink(_ c: Character, x: Int, y: Int) -> Bool {
        let g = glyph(c)
        guard x >= 0, x < BitmapFont.glyphWidth, y >= 0, y < g.count else { return false }
        return g[y] >> UInt8(BitmapFont.glyphWidth - 1 - x) & 1 == 1
    }

    /// Width in pixels of `text` at `scale` (no trailing gap after the last glyph).
    static func width(of text: String, scale: Int) -> Int {
        let n = text.count
        return n == 0 ? 0 : (n * advance - 1) * scale
    }

    /// Height in pixels of one line at `scale`, descender included.
    static func height(scale: Int) -> Int { (ascent + descent) * scale }

    /// `text` shortened with a trailing "…" so that it is at most `maxWidth` pixels wide at
    /// `scale`; unchanged when it fits. Returns "" when not even the ellipsis fits.
    static func truncated(_ text: String, toWidth maxWidth: Int, scale: Int) -> String {
        if width(of: text, scale: scale) <= maxWidth { return text }
        let fit = (maxWidth / scale + 1) / advance  // characters that fit, ellipsis included
        if fit < 1 { return "" }
        return String(text.prefix(fit - 1)) + "…"
    }

    private static let table = """
      .....
    ! ..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..
    " .#.#. .#.#. .#.#.
    # .#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.
    $ ..#.. .#### #.#.. .###. ..#.# ####. ..#..
    % ##... ##..# ...#. ..#.. .#... #..## ...##
    & .##.. #..#. #.#.. .#... #.#.# #..#. .##.#
    ' ..#.. ..#.. .#...
    ( ...#. ..#.. .#... .#... .#... ..#.. ...#.
    ) .#... ..#.. ...#. ...#. ...#. ..#.. .#...
    * ..... ..#.. #.#.# .###. #.#.# ..#.. .....
    + ..... ..#.. ..#.. ##### ..#.. ..#.. .....
    , ..... ..... ..... ..... ..... ..##. ..##. ...#. ..#..
    - ..... ..... ..... ##### ..... ..... .....
    . ..... ..... ..... ..... ..... .##.. .##..
    / ..... ....# ...#. ..#.. .#... #.... .....
    0 .###. #...# #..## #.#.# ##..# #...# .###.
    1 ..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.
    2 .###. #...# ....# ...#. ..#.. .#... #####
    3 ##### ...#. ..#.. ...#. ....# #...# .###.
    4 ...#. ..##. .#.#. #..#. ##### ...#. ...#.
    5 ##### #.... ####. ....# ....# #...# .###.
    6 ..##. .#... #.... ####. #...# #...# .###.
    7 ##### ....# ...#. ..#.. .#... .#... .#...
    8 .###. #...# #...# .###. #...# #...# .###.
    9 .###. #...# #...# .#### ....# ...#. .##..
    : ..... .##.. .##.. ..... .##.. .##.. .....
    ; ..... .##.. .##.. ..... .##.. .##.. ..#.. .#...
    < ...#. ..#.. .#... #.... .#... ..#.. ...#.
    = ..... ..... ##### ..... ##### ..... .....
    > .#... ..#.. ...#. ....# ...#. ..#.. .#...
    ? .###. #...# ....# ...#. ..#.. ..... ..#..
    @ .###. #...# ....# .##.# #.#.# #.#.# .###.
    A .###. #...# #...# ##### #...# #...# #...#
    B ####. #...# #...# ####. #...# #...# ####.
    C .###. #...# #.... #.... #.... #...# .###.
    D ###.. #..#. #...# #...# #...# #..#. ###..
    E ##### #.... #.... ####. #.... #.... #####
    F ##### #.... #.... ####. #.... #.... #....
    G .###. #...# #.... #.### #...# #...# .####
    H #...# #...# #...# ##### #...# #...# #...#
    I .###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.
    J ..### ...#. ...#. ...#. ...#. #..#. .##..
    K #...# #..#. #.#.. ##... #.#.. #..#. #...#
    L #.... #.... #.... #.... #.... #.... #####
    M #...# ##.## #.#.# #.#.# #...# #...# #...#
    N #...# #...# ##..# #.#.# #..## #...# #...#
    O .###. #...# #...# #...# #...# #...# .###.
    P ####. #...# #...# ####. #.... #.... #....
    Q .###. #...# #...# #...# #.#.# #..#. .##.#
    R ####. #...# #...# ####. #.#.. #..#. #...#
    S .#### #.... #.... .###. ....# ....# ####.
    T ##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..
    U #...# #...# #...# #...# #...# #...# .###.
    V #...# #...# #...# #...# #...# .#.#. ..#..
    W #...# #...# #...# #.#.# #.#.# #.#.# .#.#.
    X #...# #...# .#.#. ..#.. .#.#. #...# #...#
    Y #...# #...# .#.#. ..#.. ..#.. ..#.. ..#..
    Z ##### ....# ...#. ..#.. .#... #.... #####
    [ .###. .#... .#... .#... .#... .#... .###.
    \\ ..... #.... .#... ..#.. ...#. ....# .....
    ] .###. ...#. ...#. ...#. ...#. ...#. .###.
    ^ ..#.. .#.#. #...#
    _ ..... ..... ..... ..... ..... ..... ..... #####
    ` .#... ..#.. ...#.
    a ..... ..... .###. ....# .#### #...# .####
    b #.... #.... #.##. ##..# #...# #...# ####.
    c ..... ..... .###. #.... #.... #...# .###.
    d ....# ....# .##.# #..## #...# #...# .####
    e ..... ..... .###. #...# ##### #.... .###.
    f ..##. .#..# .#... ###.. .#... .#... .#...
    g ..... ..... .#### #...# #...# #...# .#### ....# .###.
    h #.... #.... #.##. ##..# #...# #...# #...#
    i ..#.. ..... .##.. ..#.. ..#.. ..#.. .###.
    j ...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..
    k #.... #.... #..#. #.#.. ##... #.#.. #..#.
    l .##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.
    m ..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#
    n ..... ..... #.##. ##..# #...# #...# #...#
    o ..... ..... .###. #...# #...# #...# .###.
    p ..... ..... ####. #...# #...# #...# ####. #.... #....
    q ..... ..... .#### #...# #...# #...# .#### ....# ....#
    r ..... ..... #.##. ##..# #.... #.... #....
    s ..... ..... .###. #.... .###. ....# ####.
    t .#... .#... ###.. .#... .#... .#..# ..##.
    u ..... ..... #...# #...# #...# #..## .##.#
    v ..... ..... #...# #...# #...# .#.#. ..#..
    w ..... ..... #...# #...# #.#.# #.#.# .#.#.
    x ..... ..... #...# .#.#. ..#.. .#.#. #...#
    y ..... ..... #...# #...# #...# #...# .#### ....# .###.
    z ..... ..... ##### ...#. ..#.. .#... #####
    { ...#. ..#.. ..#.. .#... ..#.. ..#.. ...#.
    | ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..
    } .#... ..#.. ..#.. ...#. ..#.. ..#.. .#...
    ~ ..... ..... .#... #.#.# ...#. ..... .....
    … ..... ..... ..... ..... ..... ..... #.#.#
    """
}
