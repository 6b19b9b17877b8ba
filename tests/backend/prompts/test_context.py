"""What a prompt version puts in front of a conversation."""

from __future__ import annotations

from backend.prompts.context import Context


def test_context_puts_instructions_first_and_demonstrations_as_turns() -> None:
    demos = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]
    messages = Context("Be brief.", demos).messages(  # type: ignore[arg-type]
        [{"role": "system", "content": "User is on mobile."}, {"role": "user", "content": "q2"}],
    )
    assert messages == [
        {"role": "system", "content": "Be brief.\n\nUser is on mobile."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert Context().messages([{"role": "user", "content": "q"}]) == [
        {"role": "user", "content": "q"}
    ]
