"""Reading uploads: each accepted kind with its summary and passages, every refusal with a sentence that
names the file, and the table questions the tools ask."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib

import pytest

from agent import file_reader
from agent.file_reader import (FileRefused, Passage, TableQueryError, clean_name, describe_table, load_table,
                               query_table, read_upload)

MB = 1024 * 1024
ORDERS = ("order_id,customer,amount,city\n"
          "1,Alice,10.5,Berlin\n2,bob,20,Paris\n3,ALICE,5,Berlin\n4,carol,100,Rome\n5,dave,,Paris\n")


def read(name: str, data: bytes | str, max_bytes: int = 10 * MB):
    return read_upload(name, data.encode() if isinstance(data, str) else data, max_bytes=max_bytes)


def refusal(name: str, data: bytes | str, max_bytes: int = 10 * MB) -> str:
    with pytest.raises(FileRefused) as caught:
        read(name, data, max_bytes)
    message = str(caught.value)
    assert message.startswith(clean_name(name)) and message.endswith(".") and "Traceback" not in message
    return message


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text=text)
    return bytes(pdf.output())


def raw_pdf(content: bytes) -> bytes:
    """A one-page PDF whose content stream is ``content`` (Flate-compressed), with a correct xref table."""
    stream = zlib.compress(content, 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


# -- accepted kinds ----------------------------------------------------------------------------------
def test_csv_is_a_table_with_rows_and_columns():
    result = read("orders.csv", ORDERS)
    assert (result.name, result.kind, result.media_type, result.size) == ("orders.csv", "table", "text/csv",
                                                                          len(ORDERS))
    assert result.summary == "5 rows × 4 columns"
    assert result.passages[0] == Passage("row 1", "1, Alice, 10.5, Berlin")
    assert [p.location for p in result.passages] == [f"row {n}" for n in range(1, 6)]
    assert result.passages[4].text == "5, dave, , Paris"


def test_tsv_with_a_byte_order_mark_is_a_table():
    result = read("prices.tsv", "\ufeffitem\tprice\napple\t1.5\n")
    assert (result.kind, result.media_type, result.summary) == ("table", "text/tab-separated-values",
                                                                "1 row × 2 columns")
    assert result.passages == (Passage("row 1", "apple, 1.5"),)


def test_text_and_markdown_index_their_non_empty_lines():
    text = read("notes.txt", "first line\n\n   \nfourth canary-txt\n")
    assert (text.kind, text.media_type, text.summary) == ("text", "text/plain", "4 lines")
    assert text.passages == (Passage("line 1", "first line"), Passage("line 4", "fourth canary-txt"))
    markdown = read("README.md", "# Title\r\n\r\nBody\r\n")
    assert (markdown.kind, markdown.media_type, markdown.summary) == ("text", "text/markdown", "3 lines")
    assert markdown.passages == (Passage("line 1", "# Title"), Passage("line 3", "Body"))


def test_a_very_long_line_is_indexed_in_pieces_with_its_location():
    line = " ".join(f"word{n}" for n in range(5000))
    result = read("long.txt", "short\n" + line)
    pieces = [p for p in result.passages if p.location == "line 2"]
    assert len(pieces) > 1 and all(len(p.text) <= file_reader.MAX_PASSAGE_CHARS for p in pieces)
    assert " ".join(p.text for p in pieces) == line


@pytest.mark.parametrize("value, summary", [({"a": 1, "b": [1, 2], "c": None}, "JSON object with 3 keys"),
                                            ([1], "JSON array with 1 item"), ("x", "JSON string"),
                                            (3.5, "JSON number")])
def test_json_summaries(value, summary):
    data = json.dumps(value, indent=2)
    result = read("data.json", data)
    assert (result.kind, result.media_type, result.summary) == ("json", "application/json", summary)
    assert [p.text for p in result.passages] == [line.strip() for line in data.splitlines() if line.strip()]


def test_pdf_pages_are_counted_and_each_page_is_a_passage():
    data = make_pdf([f"Page {n} says canary-page-{n}." for n in range(1, 8)])
    result = read("report.pdf", data)
    assert (result.kind, result.media_type, result.summary) == ("pdf", "application/pdf", "7 pages")
    assert [p.location for p in result.passages] == [f"page {n}" for n in range(1, 8)]
    assert "canary-page-3" in result.passages[2].text and "canary-page-3" not in result.passages[3].text


def test_names_lose_directories_and_control_characters():
    assert clean_name("../../etc/passwd.csv") == "passwd.csv"
    assert clean_name("C:\\Users\\me\\orders.csv") == "orders.csv"
    assert clean_name("ord\x00ers\u202e\n.csv") == "orders.csv"
    assert clean_name("...hidden.md") == "hidden.md"
    long = clean_name("x" * 300 + ".csv")
    assert len(long) == file_reader.MAX_NAME_CHARS and long.endswith(".csv")
    assert read("/tmp/gradio/abc123/ord\x1bers.csv", ORDERS).name == "orders.csv"


# -- refusals ----------------------------------------------------------------------------------------
def test_empty_file_is_refused():
    assert "is empty" in refusal("empty.csv", b"")
    assert "is empty" in refusal("header-only.csv", "a,b\n")


def test_binary_file_renamed_csv_is_refused():
    message = refusal("orders.csv", bytes(range(256)) * 4)
    assert message.startswith("orders.csv is not a text file") and "CSV" in message
    assert "UTF-8" in refusal("latin1.csv", "name\nJos\xe9\n".encode("latin-1"))


@pytest.mark.parametrize("name, make", [
    ("orders.csv", lambda: _zip({"orders.csv": ORDERS})),
    ("notes.txt", lambda: gzip.compress(b"hello " * 1000)),
    ("bomb.json", lambda: _zip({"big.json": "0" * 50 * MB})),  # a zip bomb: tiny outside, 50 MB inside
])
def test_archives_are_refused_whatever_the_suffix(name, make):
    message = refusal(name, make())
    assert "archives aren't accepted" in message and "PDF" in message


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_a_file_over_the_size_limit_is_refused_with_both_sizes():
    message = refusal("huge.csv", b"a" * (100 * MB), max_bytes=10 * MB)
    assert message.startswith("huge.csv is 100.0 MB; the limit is 10 MB per file")
    read("fits.txt", b"a" * 1024, max_bytes=1024)


def test_a_csv_with_ten_thousand_columns_is_refused():
    header = ",".join(f"c{n}" for n in range(10_000))
    message = refusal("wide.csv", header + "\n" + ",".join("1" * 10_000) + "\n")
    assert "10,000 columns" in message and str(file_reader.MAX_COLUMNS) in message


def test_unsupported_suffix_and_broken_contents_are_refused():
    assert "CSV, TSV, TXT, Markdown (.md), JSON or PDF" in refusal("photo.png", b"\x89PNG\r\n")
    assert "not valid JSON (line 2" in refusal("bad.json", '{"a": 1,\n oops}')
    assert "could not be read as a table" in refusal("ragged.csv", "a,b\n1,2\n1,2,3,4\n")


@pytest.mark.parametrize("data", [b"%PDF-1.7\n" + b"\x00garbage" * 100, b"not a pdf at all",
                                  make_pdf(["fine"])[:200], b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog"])
def test_a_malformed_pdf_is_refused_not_a_traceback(data):
    assert "could not be read as a PDF" in refusal("broken.pdf", data)


def test_a_pdf_whose_stream_inflates_hugely_is_refused():
    bomb = raw_pdf(b"BT /F1 12 Tf (" + b"A" * 60 * MB + b") Tj ET")
    assert len(bomb) < MB
    assert "unpacks to more than I can read" in refusal("bomb.pdf", bomb)


def test_pdf_text_beyond_the_cap_is_refused(monkeypatch):
    data = make_pdf(["x" * 500] * 3)
    assert read("ok.pdf", data).summary == "3 pages"
    monkeypatch.setattr(file_reader, "MAX_TEXT_CHARS", 1000)
    assert "more than 1,000 characters" in refusal("ok.pdf", data)


def test_pdf_page_limit(monkeypatch):
    monkeypatch.setattr(file_reader, "MAX_PDF_PAGES", 2)
    assert "has 3 pages; the limit is 2" in refusal("long.pdf", make_pdf(["a", "b", "c"]))


def test_pdf_past_its_time_budget_is_refused(monkeypatch):
    monkeypatch.setattr(file_reader, "MAX_PDF_SECONDS", -1.0)  # already past: no timing, only the branch
    assert "unpacks to more than I can read" in refusal("slow.pdf", make_pdf(["a"]))


# -- table questions ---------------------------------------------------------------------------------
@pytest.fixture
def orders():
    return load_table(ORDERS.encode(), "text/csv")


def test_describe_lists_columns_types_and_first_rows(orders):
    text = describe_table(orders, "orders.csv")
    assert text.startswith("orders.csv: 5 rows × 4 columns.")
    assert "order_id (whole number)" in text and "amount (number)" in text and "city (text)" in text
    assert "| order_id | customer | amount | city |" in text and "| 4 | carol | 100.0 | Rome |" in text


def test_count_sum_mean_min_max(orders):
    assert query_table(orders, "orders.csv", "count") == "orders.csv has 5 rows."
    assert query_table(orders, "orders.csv", "sum", "amount") == "The sum of amount in orders.csv is 135.5."
    assert query_table(orders, "orders.csv", "mean", "Amount") == "The mean of amount in orders.csv is 33.875."
    assert query_table(orders, "orders.csv", "min", "AMOUNT") == "The smallest amount in orders.csv is 5."
    assert query_table(orders, "orders.csv", "max", "amount") == "The largest amount in orders.csv is 100."
    assert query_table(orders, "orders.csv", "count", "amount") == "orders.csv has 4 rows with a value in amount."


def test_filters_compare_text_case_insensitively_and_numbers_as_numbers(orders):
    assert query_table(orders, "orders.csv", "sum", "amount", "CUSTOMER", "alice") == (
        'The sum of amount in orders.csv where customer is "alice" is 15.5.')
    assert query_table(orders, "orders.csv", "count", None, "city", "paris") == (
        'orders.csv has 2 rows where city is "paris".')
    assert query_table(orders, "orders.csv", "count", None, "amount", "20") == (
        'orders.csv has 1 row where amount is "20".')
    assert query_table(orders, "orders.csv", "sum", "amount", "city", "Oslo") == (
        'No rows of orders.csv have city equal to "Oslo", so there is nothing to sum.')


def test_top_returns_the_rows_with_the_largest_values(orders):
    text = query_table(orders, "orders.csv", "top", "amount", n=2)
    assert text.startswith("The 2 rows of orders.csv with the largest amount:")
    assert text.index("| 4 | carol |") < text.index("| 2 | bob |") and "Alice" not in text
    filtered = query_table(orders, "orders.csv", "top", "amount", "city", "berlin", n=5)
    assert "The 2 rows" in filtered and "carol" not in filtered


def test_unknown_columns_and_operations_name_what_exists(orders):
    with pytest.raises(TableQueryError) as caught:
        query_table(orders, "orders.csv", "sum", "price")
    assert str(caught.value) == ('orders.csv has no column named "price"; '
                                 "its columns are: order_id, customer, amount, city.")
    with pytest.raises(TableQueryError, match="order_id, customer"):
        query_table(orders, "orders.csv", "count", None, "country", "DE")
    with pytest.raises(TableQueryError, match="count, sum, mean, min, max, top"):
        query_table(orders, "orders.csv", "__import__('os')", "amount")
    with pytest.raises(TableQueryError, match="holds no numbers"):
        query_table(orders, "orders.csv", "sum", "city")
