"""Rendering of the pipe tables pathfm writes (Markdown) into HTML, for the reports and table files."""

from __future__ import annotations

import html


def md_table_to_html(md: str) -> str:
    """Tiny renderer for the pipe tables this package writes (no nesting, no escapes needed)."""
    out, rows = [], [line for line in md.splitlines() if line.startswith("|")]
    rest = [line for line in md.splitlines() if line and not line.startswith("|")]
    if rows:
        out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0].strip("|").split("|")) + "</tr></thead><tbody>")
        for r in rows[2:]:
            out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r.strip("|").split("|")) + "</tr>")
        out.append("</tbody></table>")
    out += [f"<p><small>{html.escape(line)}</small></p>" for line in rest]
    return "\n".join(out)
