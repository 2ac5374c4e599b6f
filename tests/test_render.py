"""ui/render.py: what a person typed is shown literally; stopped answers say so."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from ui.render import STOPPED_NOTE, literal, render_transcript, transcript_records


def test_markup_in_user_text_is_escaped_and_plain_text_is_untouched():
    assert literal("What's my name?") == "What's my name?"
    assert literal("<img src=x onerror=alert(1)>") == "\\<img src\\=x onerror\\=alert\\(1\\)\\>"
    assert literal("**b** _i_ [l](u) `c` $$x$$ ~s~ | & #") == \
        "\\*\\*b\\*\\* \\_i\\_ \\[l\\]\\(u\\) \\`c\\` \\$\\$x\\$\\$ \\~s\\~ \\| \\& \\#"
    assert literal("    code?\n\tno") == "&nbsp;&nbsp;&nbsp;&nbsp;code?\n&nbsp;&nbsp;&nbsp;&nbsp;no"


def test_transcript_escapes_user_text_only_and_marks_stopped_answers():
    messages = [HumanMessage("**hi** <b>"), AIMessage("**bold** answer"), HumanMessage("Count to 9"),
                AIMessage("1 2 3", response_metadata={"stopped": True})]
    shown = render_transcript(messages)
    assert [m.content for m in shown] == ["\\*\\*hi\\*\\* \\<b\\>", "**bold** answer", "Count to 9",
                                          f"1 2 3\n\n{STOPPED_NOTE}"]
    # The API gets the text as typed and as answered.
    assert transcript_records(messages) == [
        {"role": "user", "content": "**hi** <b>"}, {"role": "assistant", "content": "**bold** answer"},
        {"role": "user", "content": "Count to 9"}, {"role": "assistant", "content": "1 2 3"}]
