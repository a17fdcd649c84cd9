"""A1111's `parameters` text read back as A1111 reads it: the writer's own text round-trips."""

from __future__ import annotations

from app.a1111.infotext import parse_parameters
from tests.workers.segments.test_png import HIRES
from workers.segments.png import parameters_text


def test_the_workers_own_text_reads_back_field_by_field() -> None:
    fields = parse_parameters(parameters_text(HIRES, 0, "Euler"))
    assert (fields["Prompt"], fields["Negative prompt"]) == ("a castle", "blurry")
    assert (fields["Steps"], fields["Sampler"], fields["Seed"]) == ("20", "Euler", "3")
    assert (fields["Size-1"], fields["Size-2"]) == ("256", "256")
    assert (fields["Hires upscaler"], fields["Hires checkpoint"]) == ("Lanczos", "flux")


def test_quoted_values_and_multi_line_prompts_read_back_as_written() -> None:
    text = (
        "a castle,\non a hill\nNegative prompt: fog\nSteps: 4, Sampler: Euler, Seed: 1, "
        'Lora hashes: "a: 0123, b: 4567", Size: 64x32'
    )
    fields = parse_parameters(text)
    assert fields["Prompt"] == "a castle,\non a hill"
    assert fields["Negative prompt"] == "fog"
    assert fields["Lora hashes"] == "a: 0123, b: 4567"
    assert (fields["Size-1"], fields["Size-2"]) == ("64", "32")
