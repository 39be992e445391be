"""Text that exercises tokenizers: where a wrong pre-tokenizer, a missing normalizer step or a
mishandled special token changes the ids.

``tokenizer_corpus(special_tokens)`` is a few hundred short strings: digit runs of every length
alone and inside words (llama.cpp's types differ in grouping digits by 1, by 3 or not at all),
fractions, superscripts and other numerals, currency, dates and versions, mixed scripts (CJK,
Arabic, Devanagari, Thai, Cyrillic, ...), emoji with skin-tone modifiers and ZWJ sequences, code
with tabs and indentation, whitespace runs and newlines, contractions in every case, URLs,
punctuation runs, and the model's own special tokens alone and inside text.
"""
from __future__ import annotations

_DIGITS = "314159265358979"

FRACTIONS = ["4 ½", "ied 4 ½ months", "¼ cup and ¾ cup", "x² + y² = z²", "10⁻³ m", "H₂O and CO₂",
             "Ⅻ chapters, Ⅳ parts", "①②③ steps", "٣٤٥ and ١٢", "१२३ रुपये", "๑๒๓ บาท",
             "１２３ full width", "2½-year-old", "3¹⁄₂ inches", "½", "²", "5²=25", "e^{iπ}+1=0"]
CURRENCY = ["$5", "$1,234.56", "€10.50", "£3,000", "¥1000", "₹2,50,000", "1.5M USD", "-$0.99",
            "CHF 12.-", "R$ 9,90", "₿0.005", "100€", "$$$", "US$5 or 5 USD"]
NUMBERS = ["3.14159", "1,000,000", "2024-01-01", "12:30:45", "+1 (555) 123-4567", "v1.2.3",
           "0x1F 0b1010 0o17", "1e-10 and 6.02e23", "50%", "#1 and No. 2", "3..3 3...3",
           "3 33 333 3333 33333 333333 3333333 33333333", "1st 2nd 3rd 4th 21st 102nd",
           "IPv4 192.168.0.1:8080", "ISBN 978-3-16-148410-0", "-273.15°C", "π≈3.14"]
SCRIPTS = ["我想在apple工作1314151天～", "日本語のテキストです。カタカナとひらがな。", "안녕하세요, 세계!",
           "中文，标点。还有“引号”！", "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "नमस्ते दुनिया, क्या हाल है?",
           "สวัสดีชาวโลก ภาษาไทย", "Привет, мир! Как дела?", "нещо на Български", "Γειά σου Κόσμε",
           "កាន់តែពិសេសអាច😁", "Tiếng Việt có dấu", "İstanbul'da ılık bir gün",
           "Straße, Größe, Äpfel",
           "Ünïcödé: café, naïve, résumé", "apple苹果 banana香蕉 cherry櫻桃", "Ελληνικά και English",
           "ქართული ენა", "Հայերեն", "தமிழ் மொழி", "বাংলা ভাষা", "ਪੰਜਾਬੀ", "ᐃᓄᒃᑎᑐᑦ",
           "mixed: English, 日本, Русский, العربية, हिन्दी"]
EMOJI = ["🚀", "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ 🦙🦙", "👍🏽 thumbs", "👩🏾‍💻 coder",
         "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇺🇸🇯🇵🇩🇪", "1️⃣ 2️⃣ #️⃣", "❤️ and ♥", "🤷‍♀️🤷🏻‍♂️",
         "text🙂text", "😁😁😁", "🧑🏿‍🤝‍🧑🏻", "☺︎ vs ☺️", "🫠🫡"]
CODE = [
    "def f(x):\n    return x * 2  # comment",
    "def add(a, b):\n\treturn a + b\n",
    "class A:\n    def __init__(self):\n        self.x = {'k': [1, 2, 3]}\n",
    "if (x == 1) {\n\tprintf(\"%d\\n\", x);\n}\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "const f = async (x) => { await g(x); return x?.y ?? 0; };",
    "{\"json\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"a\"><p>Hello</p></div>",
    "#!/bin/sh\nfor f in *.txt; do echo \"$f\"; done",
    "x = re.compile(r'^\\s*(\\d+)\\s*$')",
    "    indented four\n        indented eight\n\t\ttwo tabs",
    "```python\nprint('hi')\n```",
    "a-b_c/d\\e|f&g^h~i`j",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "matrix[i][j] += other[j][k] * 0.5;",
    "// TODO: fix\n/* block */\n-- sql\n# py",
    "key: value\nlist:\n  - one\n  - two\n",
    "diff --git a/x b/x\n@@ -1,3 +1,4 @@\n-old\n+new",
]
WHITESPACE = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n",
              "\r\n\r\n", " \n ", "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a \n b",
              "end   ", "  leading spaces", "\tleading tab", "\nleading newline",
              "two  spaces,\tand "
              "a tab\n\nnew lines\r\n end   ", "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
              "word \u00a0nbsp", "ideographic\u3000space", "zero\u200bwidth", "trailing\n"]
CONTRACTIONS = ["I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like "
                "some tea? We'Ve a'lL", "don't DON'T Don't", "it's IT'S It's", "they're THEY'RE",
                "we've WE'VE we'VE", "I'm I'M", "you'll YOU'LL", "he'd HE'D",
                "'s 't 're 've 'm 'll 'd",
                "rock 'n' roll", "o'clock, O'Brien", "’curly’ apostrophes’s"]
URLS = ["https://example.com/path?q=1&r=two#frag", "http://localhost:8080/api/v1/items",
        "user.name+tag@example.co.uk", "www.test.org/a_b-c", "file:///tmp/x.txt",
        "ftp://host/dir/", "see <https://a.b/c> and (https://d.e)", "git@github.com:o/r.git"]
PUNCTUATION = ["''''''```````\"\"\"\"......!!!!!!??????", "------=======", "...", "—dash–",
               "«guillemets»",
               "„German“", "¿Qué? ¡Sí!", "!!!", "???", "::", ";;", "((()))", "[[[]]]", "{{}}",
               "@#$%^&*", "...!?", "Hello, world!", "e.g., i.e., etc."]
PROSE = ["The quick brown fox jumps over the lazy dog.", "Tailor trains adapters; 12 apples and 3 "
         "pears.", "Numbers 7 42 123 4567 3.14159 1,000,000", "CamelCaseWords and snake_case_words",
         "ALL CAPS SENTENCE HERE", "MiXeD cAsE wOrDs", "hyphen-ated well-known", "a", "I",
         "Mr. Smith's 3rd book (2nd ed.) costs $12.99."]


def digit_strings() -> list[str]:
    """Digit runs of every length 1-12, alone, spaced, inside words and after letters."""
    out = []
    for n in range(1, 13):
        d = (_DIGITS * 2)[:n]
        out += [d, f" {d}", f"abc{d}def", f"v{d}", f"{d} items", f"x{d}y{d[::-1]}z", f"({d})"]
    return out


def special_token_strings(specials: list[str]) -> list[str]:
    """Each special token alone, inside text, next to another and at a line start."""
    out = []
    for i, t in enumerate(specials):
        nxt = specials[(i + 1) % len(specials)]
        out += [t, f"x {t} y", f"Hello{t}world", f"{t}{nxt}", f"{t}\nHello", f"line\n{t}",
                f" {t} "]
    if specials:
        out.append("x " + " y ".join(specials) + " z")
    return out


def tokenizer_corpus(specials: list[str] | None = None) -> list[str]:
    """The built-in corpus, the model's special tokens included (see the module docstring)."""
    corpus = (digit_strings() + FRACTIONS + CURRENCY + NUMBERS + SCRIPTS + EMOJI + CODE
              + WHITESPACE + CONTRACTIONS + URLS + PUNCTUATION + PROSE)
    # the same pieces joined: boundaries between scripts, digits and punctuation
    corpus += [f"{a} {b}" for a, b in zip(SCRIPTS, NUMBERS + CURRENCY)]
    corpus += [f"{a}{b}" for a, b in zip(EMOJI, SCRIPTS)]
    corpus += special_token_strings(list(specials or []))
    seen: set[str] = set()
    return [s for s in corpus if not (s in seen or seen.add(s))]
