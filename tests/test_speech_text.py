"""Speech text shaping: what Piper is given is what a person would say."""

import pytest

from processors.speech_text import shape_for_speech, shape_text


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("It costs $500.", "It costs five hundred dollars."),
        ("That's $3.50 in total.", "That's three dollars and fifty cents in total."),
        ("Only $1 today.", "Only one dollar today."),
        ("It sold for $1.5 million.", "It sold for one point five million dollars."),
        ("The bill was $1,200.", "The bill was one thousand, two hundred dollars."),
        ("Your appointment is at 3:30 pm.", "Your appointment is at three thirty p m."),
        ("Lunch at 12:05 p.m. tomorrow", "Lunch at twelve oh five p m tomorrow"),
        ("Wake me at 7 am.", "Wake me at seven a m."),
        ("The train leaves at 14:00.", "The train leaves at fourteen o'clock."),
        ("Dr. Patel will see you.", "Doctor Patel will see you."),
        ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
        ("It is 25°C outside.", "It is twenty-five degrees Celsius outside."),
        ("Set it to 68°F.", "Set it to sixty-eight degrees Fahrenheit."),
        ("It fell to -5°C overnight.", "It fell to minus five degrees Celsius overnight."),
        ("Add 1/2 cup of milk.", "Add one half cup of milk."),
        ("Use 3/4 of it.", "Use three quarters of it."),
        ("About 2/3 of people", "About two thirds of people"),
        ("It's the 21st of May.", "It's the twenty-first of May."),
        ("Born in 1952.", "Born in nineteen fifty-two."),
        ("About 40% of them.", "About forty percent of them."),
        ("Walk 2 km a day.", "Walk two kilometers a day."),
        ("Open 24/7.", "Open twenty-four seven."),
        ("Salt & pepper", "Salt and pepper"),
    ],
)
def test_spoken_forms(text, spoken):
    assert shape_text(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**Yes**, take the *blue* pill.", "Yes, take the blue pill."),
        (
            "## Steps\n- Open the door\n- Turn on the light",
            "Steps. Open the door. Turn on the light",
        ),
        ("1. First\n2. Second", "First. Second"),
        ("Great idea! 😀👍", "Great idea!"),
        ("See [the guide](https://example.com/guide) for more.", "See the guide for more."),
        ("Visit https://www.weather.gov/forecast?x=1 today.", "Visit weather dot gov today."),
        ("Run `reboot` now.", "Run reboot now."),
    ],
)
def test_no_markdown_emoji_or_urls_read_aloud(text, spoken):
    shaped = shape_text(text)
    assert shaped == spoken
    for bad in ("*", "#", "http", "](", "`", "😀"):
        assert bad not in shaped


def test_plain_text_unchanged():
    text = "The kettle takes about three minutes to boil."
    assert shape_text(text) == text


async def test_transform_is_async_for_pipecat():
    assert await shape_for_speech("It costs $5.", "sentence") == "It costs five dollars."
