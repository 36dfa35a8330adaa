"""summary.html: the Markdown the summary writes as one page that needs nothing outside itself."""
from html.parser import HTMLParser

from tune_p7.report.report_html import to_html

MD = """# Summary of x

- warning: the oracle would be stopped by the drift gate (cos_anchor -0.66 < 0.05)

Search: data `d.parquet`; precision requested auto, used fp32.

| rank | lr | note |
|---|---|---|
| 1 | 2.00e-04 | a <b> & **c** |

![curves.png](curves.png)
![missing.png](missing.png)
"""


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_embeds_its_images_escapes_text_and_references_nothing_outside():
    page = to_html(MD, {"curves.png": b"\x89PNG fake"}, "t")
    parser = Tags()
    parser.feed(page)
    tags = parser.tags
    names = [t for t, _ in tags]
    assert "script" not in names and "link" not in names and names.count("img") == 1
    assert all(not (a.get("src") or a.get("href") or "data:").startswith(("http", "//", "/", "file:"))
               for _, a in tags)
    (img,) = [a for t, a in tags if t == "img"]
    assert img["src"].startswith("data:image/png;base64,")
    assert "a &lt;b&gt; &amp; <strong>c</strong>" in page and "<th>lr</th>" in page and "<td>2.00e-04</td>" in page
    assert '<li class="warning">warning: the oracle' in page and "[missing.png]" in page
    assert page.index("warning:") < page.index("<table>")
