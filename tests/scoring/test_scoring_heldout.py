import pytest

from scoring.heldout import HeldoutError, HeldoutRow, load_heldout

# The seed's own example rows.
QA_TSV = (
    "soru\tinsan\tmakine\n"
    "Boğaz köprüsünün sudan yüksekliği kaç metredir?\tBoğaz köprüsü denizden 64 metre yüksekliğe sahiptir.\t64 metre\n"
    "Türkiye'de en yüksek puanla öğrenci kabul eden üniversite hangisidir?\t"
    "Türkiye'de en yüksek puanla öğrenci kabul eden yer Boğaziçi Üniversitesi'dir.\tOrta Doğu Teknik Üniversitesi (ODTÜ)\n"
)
INSTRUCTIONS_TSV = (
    "talimat\tgiris\tcikti\n"
    "Aşağıdaki makale için bir başlık önerin: Bu makale internetin rolünü incelemektedir.\t\t"
    '"Dijital İletişimin Gücü: İnternet İş Ortamını Nasıl Dönüştürüyor"\n'
    "Bu cümleyi İngilizceye çevirin.\tKedi uyuyor.\tThe cat is sleeping.\n"
)


def write(tmp_path, text, name="set.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_qa_format_is_detected_and_insan_is_the_reference(tmp_path):
    heldout = load_heldout(write(tmp_path, QA_TSV))
    assert heldout.format == "qa"
    assert heldout.rows[0] == HeldoutRow(
        question="Boğaz köprüsünün sudan yüksekliği kaç metredir?",
        giris="",
        reference="Boğaz köprüsü denizden 64 metre yüksekliğe sahiptir.",
        short_reference="64 metre",
    )
    assert heldout.rows[1].short_reference == "Orta Doğu Teknik Üniversitesi (ODTÜ)"
    assert len(heldout.rows) == 2


def test_instructions_format_keeps_quotes_and_allows_empty_giris(tmp_path):
    heldout = load_heldout(write(tmp_path, INSTRUCTIONS_TSV))
    assert heldout.format == "instructions"
    assert heldout.rows[0].giris == ""
    # The quotes are part of the reference, not TSV quoting.
    assert heldout.rows[0].reference == '"Dijital İletişimin Gücü: İnternet İş Ortamını Nasıl Dönüştürüyor"'
    assert heldout.rows[1] == HeldoutRow("Bu cümleyi İngilizceye çevirin.", "Kedi uyuyor.", "The cat is sleeping.", "")


def test_byte_order_mark_crlf_and_blank_lines_are_tolerated(tmp_path):
    path = tmp_path / "excel.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + QA_TSV.replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n")
    heldout = load_heldout(path)
    assert heldout.format == "qa"
    assert [row.short_reference for row in heldout.rows] == ["64 metre", "Orta Doğu Teknik Üniversitesi (ODTÜ)"]


def test_limit_keeps_the_first_rows(tmp_path):
    heldout = load_heldout(write(tmp_path, QA_TSV), limit=1)
    assert [row.short_reference for row in heldout.rows] == ["64 metre"]
    with pytest.raises(HeldoutError, match="limit=0"):
        load_heldout(write(tmp_path, QA_TSV), limit=0)


def test_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path, "soru\tmakine\nNe?\tEvet\n", name="eksik.tsv")
    with pytest.raises(HeldoutError) as error:
        load_heldout(path)
    message = str(error.value)
    assert "eksik.tsv" in message and "line 1" in message and "['insan']" in message


def test_empty_answer_names_line_and_column(tmp_path):
    # Line 3 of the file (header is line 1) has an empty insan.
    text = QA_TSV.splitlines(keepends=True)[0] + "Bir?\tİki.\t2\n" + "Üç?\t \t3\n"
    with pytest.raises(HeldoutError, match=r"set\.tsv: line 3, column 'insan' is empty"):
        load_heldout(write(tmp_path, text))


def test_empty_question_names_line_and_column(tmp_path):
    text = "talimat\tgiris\tcikti\n\tgiriş\tçıktı\n"
    with pytest.raises(HeldoutError, match=r"line 2, column 'talimat' is empty"):
        load_heldout(write(tmp_path, text))


def test_wrong_number_of_fields_names_line(tmp_path):
    text = "talimat\tgiris\tcikti\nYaz.\tbir\tiki\tüç\n"
    with pytest.raises(HeldoutError, match=r"line 2 has 4 tab-separated fields, the header has 3"):
        load_heldout(write(tmp_path, text))


def test_header_only_is_an_error(tmp_path):
    with pytest.raises(HeldoutError, match="no data rows"):
        load_heldout(write(tmp_path, "soru\tinsan\tmakine\n"))
