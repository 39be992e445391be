"""The Go template renderer used to check our Ollama templates, checked itself against
hand-written expected output for Go text/template semantics (trim markers, else-if chains,
variables and assignment, printf, range with index, continue), and its parse errors."""
from __future__ import annotations

import pytest

from engine.ollama.gotemplate import GoTemplateError, parse, render

MESSAGES = [{"Role": "system", "Content": "Be brief."}, {"Role": "user", "Content": "Hi"},
            {"Role": "assistant", "Content": "Hello"}, {"Role": "user", "Content": "Bye"}]
DATA = {"System": "Be brief.", "Messages": MESSAGES}


def test_chatml_style_range_with_trim_markers():
    # The shape of Ollama's chatml library template: '{{-' eats the newline before it.
    src = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
           "{{ end }}<|im_start|>assistant\n")
    assert render(src, DATA) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                 "<|im_start|>user\nHi<|im_end|>\n"
                                 "<|im_start|>assistant\nHello<|im_end|>\n"
                                 "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")


def test_trim_both_sides_and_else_if_chain():
    src = ("{{- range .Messages }}\n"
           "  {{- if eq .Role \"system\" }}S:{{ .Content }}\n"
           "  {{- else if eq .Role \"user\" }}U:{{ .Content }}\n"
           "  {{- else }}A:{{ .Content }}\n"
           "  {{- end }}|\n"
           "{{- end -}}\n   END")
    assert render(src, DATA) == "S:Be brief.|U:Hi|A:Hello|U:Bye|END"


def test_variables_assignment_printf_and_dollar_root():
    src = ('{{- $sys := "" }}{{ range .Messages }}{{ if eq .Role "system" }}'
           '{{ $sys = printf "%s!" .Content }}{{ continue }}{{ end }}'
           '[{{ .Role }}{{ if and $sys (eq .Role "user") }} ({{ $sys }}){{ $sys = "" }}{{ end }}]'
           '{{ end }} {{ $.System }} {{ len .Messages }}')
    assert render(src, DATA) == "[user (Be brief.!)][assistant][user] Be brief. 4"


def test_range_with_index_and_last_element():
    src = ('{{ range $i, $m := .Messages }}{{ if eq (len (slice_free $.Messages)) 0 }}{{ end }}'
           '{{ end }}')
    with pytest.raises(GoTemplateError, match="not supported"):
        render(src, DATA)
    src = ('{{ $n := len .Messages }}{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }}'
           '{{ if ne $i 3 }},{{ end }}{{ end }}')
    assert render(src, DATA) == "0=system,1=user,2=assistant,3=user"


def test_if_truthiness_and_not_or():
    src = ('{{ if .Missing }}x{{ else }}empty{{ end }} {{ if not .System }}no{{ else }}yes{{ end }}'
           ' {{ or .Missing "fallback" }} {{ if .Messages }}some{{ end }}')
    assert render(src, DATA) == "empty yes fallback some"


def test_string_literals_with_braces_and_escapes():
    assert render('{{ "{{" }}x{{ "}}\\n" }}', {}) == "{{x}}\n"
    assert render('{{ "\\u00e9\\t\\"q\\" \\x41 🙂" }}', {}) == 'é\t"q" A 🙂'
    with pytest.raises(GoTemplateError, match="surrogate"):
        render('{{ "\\ud83d" }}', {})


@pytest.mark.parametrize("bad,words", [
    ("{{ if .System }}open", "unclosed 'if'"),
    ("{{ range .Messages }}{{ .Content }}", "unclosed 'range'"),
    ("text {{ end }}", "'end' without"),
    ("{{ .Content ", "unclosed action"),
    ("a }} b", "unexpected '}}'"),
    ("{{ else }}", "'else' outside"),
    ("{{ if .A }}{{ else }}{{ else }}{{ end }}", "'else' after 'else'"),
    ("{{ continue }}", "outside of a range"),
])
def test_parse_errors(bad, words):
    with pytest.raises(GoTemplateError, match=words.replace("(", r"\(").replace("'", "'")):
        parse(bad)
