"""The sandbox's Markdown renderer for card detail: the few constructs cards use, and
never a tag the text did not earn."""

from __future__ import annotations

import pytest

from cds_service.web.markdown import render_markdown


def test_paragraphs_are_separated_by_blank_lines():
    assert render_markdown("One\nline.\n\nTwo.") == "<p>One line.</p>\n<p>Two.</p>"


def test_bullet_lists():
    assert render_markdown("- a\n- b\n* c") == "<ul><li>a</li><li>b</li><li>c</li></ul>"


def test_a_paragraph_followed_by_a_list_in_one_block():
    assert render_markdown("Facts:\n- a\n- b") == "<p>Facts:</p>\n<ul><li>a</li><li>b</li></ul>"


def test_an_indented_line_continues_the_list_item():
    assert render_markdown("- a\n  continued") == "<ul><li>a continued</li></ul>"


def test_bold_and_italics():
    assert render_markdown("**bold**, *it* and _it_") == (
        "<p><strong>bold</strong>, <em>it</em> and <em>it</em></p>")


def test_underscores_inside_words_are_not_emphasis():
    assert render_markdown("snake_case_name") == "<p>snake_case_name</p>"


def test_inline_code_is_not_formatted_further():
    assert render_markdown("`Condition/**x**`") == "<p><code>Condition/**x**</code></p>"


def test_https_links_open_in_a_new_tab_without_referrer():
    assert render_markdown("[NASS](https://example.org/a?b=1&c=2)") == (
        '<p><a href="https://example.org/a?b=1&amp;c=2" target="_blank" '
        'rel="noopener noreferrer">NASS</a></p>')


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "/relative",
                                 "ftp://example.org/x"])
def test_other_link_targets_stay_text(url):
    rendered = render_markdown(f"[click]({url})")
    assert "<a" not in rendered
    assert "[click]" in rendered


def test_html_in_the_text_is_escaped_first():
    rendered = render_markdown('<script>alert("x")</script> **<b>bold</b>**')
    assert "<script" not in rendered and "<b>" not in rendered
    assert rendered == ("<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; "
                        "<strong>&lt;b&gt;bold&lt;/b&gt;</strong></p>")


def test_a_link_label_cannot_break_out_of_the_attribute():
    rendered = render_markdown('[x](https://e.org/"onmouseover="alert(1))')
    assert 'onmouseover="' not in rendered


def test_empty_detail_renders_nothing():
    assert render_markdown(None) == "" and render_markdown("\n\n") == ""
