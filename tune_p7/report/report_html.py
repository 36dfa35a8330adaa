"""summary.html: summary.md as one self-contained page (inline style, images as data URIs, no scripts, no links
to anything outside the file), so it opens in any browser from a laptop, a bucket download or an e-mail.

Converts the Markdown subset the summary, the probe and the evaluation write: headings, pipe tables, bullet
lists, paragraphs, ``**bold**``, backquoted code and image lines ``![name](name)`` naming one of the PNGs.
"""
from __future__ import annotations

import base64
import html
import re

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1800px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:right;white-space:nowrap}th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
.scroll{overflow-x:auto}img{max-width:100%;height:auto;display:block;margin:.8em 0}code{background:#f4f4f4}
.warning{background:#fff4e5;border-left:4px solid #e67e00;padding:.3em .6em;margin:.2em 0}"""
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    rows = [_cells(ln) for ln in lines if not re.fullmatch(r"\|?\s*(:?-+:?\s*\|\s*)*:?-*:?\s*\|?", ln.strip())]
    head, body = rows[0], rows[1:]
    out = ["<div class=scroll><table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>",
           "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</tbody></table></div>"])


def to_html(markdown: str, images: dict[str, bytes], title: str) -> str:
    """The page for ``markdown``; an image line whose target is a key of ``images`` is embedded as a data URI,
    any other image line becomes its alt text (nothing is fetched from elsewhere)."""
    out, para = [], []
    lines = markdown.splitlines()

    def flush():
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        if line.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(lines[i][2:])
                i += 1
            css = [' class="warning"' if it.startswith("warning:") else "" for it in items]
            out.append("<ul>" + "".join(f"<li{c}>{_inline(it)}</li>" for c, it in zip(css, items)) + "</ul>")
            continue
        heading = re.match(r"^(#{1,4}) (.*)$", line)
        image = IMAGE.match(line)
        if heading:
            flush()
            n = len(heading.group(1))
            out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
        elif image:
            flush()
            alt, name = image.groups()
            if name in images:
                data = base64.b64encode(images[name]).decode()
                out.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
            else:
                out.append(f"<p>[{_inline(alt)}]</p>")
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
