"""The browser demo in real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

A fake microphone plays an espeak-ng question with leading and trailing
silence. The test asserts that the playback worklet actually played reply
audio (sample count and RMS), that the latency the page shows is the page's
own measurement, and that it is consistent with the server's
``timings.first_send_ms`` for that turn (the server's interval lies inside the
page's). It saves a screenshot under reports/ (gitignored).

The pipeline is a parameter: the issue's acceptance needs ``fused`` or
``cascade``; those cases skip until the server offers them. ``echo`` is the
loopback check that runs today.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from clients.groundtruth import with_silence
from tests.clients.conftest import needs_espeak, say

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # pragma: no cover - depends on the environment
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = os.environ.get("REJOINDER_CHROMIUM", "/usr/bin/chromium")
REPORTS = Path(__file__).resolve().parents[2] / "reports"
MIC_RATE = 48000
QUESTION = "what is two plus two"
# fused, cascade: the acceptance cases; echo: the loopback check that exists today.
PIPELINES = ["fused", "cascade", "echo"]

needs_browser = pytest.mark.skipif(
    async_playwright is None or not Path(CHROMIUM).exists(),
    reason=(
        "browser test needs playwright (pip install playwright==1.65.2) and Debian's chromium "
        f"at {CHROMIUM} (apt-get install chromium); no browser is downloaded"
    ),
)


# Flags for a quiet headless Chromium that may use the microphone without asking.
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_args(fake_mic: Path) -> list[str]:
    return ["--headless", *BASE_ARGS, "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic}%noloop"]  # fmt: skip


@contextlib.asynccontextmanager
async def chromium(fake_mic: Path) -> AsyncIterator[Browser]:
    assert async_playwright is not None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(fake_mic))
        try:
            yield browser
        finally:
            await browser.close()


def fake_microphone(path: Path) -> Path:
    """The question with 0.5 s of silence before and 6 s after, as 16-bit PCM at 48 kHz."""
    audio = with_silence(say(QUESTION, MIC_RATE), MIC_RATE, 0.5, 6.0)
    sf.write(path, audio, MIC_RATE, subtype="PCM_16")
    return path


@needs_browser
@needs_espeak
@pytest.mark.parametrize("pipeline", PIPELINES)
async def test_demo_plays_the_reply_and_shows_the_page_latency(
    pipeline: str, start_server_with: Callable[..., Any], tmp_path: Path
) -> None:
    rs, stop = await start_server_with(pipelines=pipeline)
    try:
        if pipeline not in rs.app.pipelines:
            why = rs.app.skipped.get(pipeline, "not loaded")
            pytest.skip(f"{pipeline} pipeline not available on this server: {why}")
        async with chromium(fake_microphone(tmp_path / "mic.wav")) as browser:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"http://127.0.0.1:{rs.port}/?pipeline={pipeline}")
            await page.click("#start")
            await page.wait_for_function(
                "() => { const t = window.rejoinder.turns[0];"
                " return t && t.status !== null && window.rejoinder.status !== 'speaking'; }",
                timeout=30_000,
                polling=100,
            )
            await page.wait_for_timeout(300)  # the jitter buffer's tail and a last stats message
            state = await page.evaluate(
                "() => { const s = window.rejoinder;"
                " return {...s, turns: s.turns.map(t => ({...t, onset: undefined}))}; }"
            )
            shown = await page.inner_text("#latency")
            REPORTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(REPORTS / f"browser-{pipeline}.png"), full_page=True)
    finally:
        await stop()

    assert errors == [] and state["message"] == "", (errors, state["message"])
    assert state["pipeline"] == pipeline and state["sampleRate"] in (8000, 16000, 22050, 24000, 44100, 48000)
    turn = state["turns"][0]
    assert turn["pipeline"] == pipeline and turn["status"] == "completed"
    # reply audio was played by the worklet, and it was not silence
    rate = state["sampleRate"]
    assert state["playedSamples"] > 0.2 * rate
    assert state["playedRms"] > 10 ** (-50 / 20)
    assert state["playedPeakRms"] > 10 ** (-35 / 20)
    assert state["positionsSent"] > 0
    # the number shown is the page's own measurement of this turn
    assert turn["latencyMs"] is not None
    # (JS rounds halves up, Python's round() to even: compare within half a millisecond)
    assert shown == f"{state['lastLatencyShownMs']} ms" and abs(state["lastLatencyShownMs"] - turn["latencyMs"]) <= 0.5
    # ...and consistent with the server's timing: capture of the last speech sample ->
    # first reply audio on the page contains arrival of that sample -> first send on the server
    server_ms = turn["serverFirstSendMs"]
    assert server_ms is not None
    assert server_ms - 2.0 <= turn["latencyMs"] < server_ms + 1000.0
    if turn["audibleMs"] is not None:
        assert turn["audibleMs"] >= turn["latencyMs"]


@needs_browser
async def test_demo_explains_denied_microphone_full_server_and_server_down(
    start_server_with: Callable[..., Any], tmp_path: Path
) -> None:
    mic = tmp_path / "silence.wav"
    sf.write(mic, [0.0] * 4800, MIC_RATE, subtype="PCM_16")
    rs, stop = await start_server_with(max_sessions=1)
    from clients.client import connect

    try:
        async with chromium(mic) as browser:
            url = f"http://127.0.0.1:{rs.port}/"

            async def message_after_start(page: Any) -> str:
                await page.click("#start")
                await page.wait_for_function("() => window.rejoinder.messageKind !== null", timeout=10_000)
                return str(await page.evaluate("window.rejoinder.messageKind"))

            denied = await browser.new_page()
            await denied.add_init_script(
                "navigator.mediaDevices.getUserMedia = () =>"
                " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
            )
            await denied.goto(url)
            assert await message_after_start(denied) == "mic-denied"
            assert "denied" in await denied.inner_text("#message")

            full = await browser.new_page()
            await full.goto(url)
            async with connect(rs.url):  # takes the only session
                assert await message_after_start(full) == "server-full"
            assert "full" in await full.inner_text("#message")

            down = await browser.new_page()
            await down.goto(url)
            await stop()
            assert await message_after_start(down) == "server-down"
            assert "down" in await down.inner_text("#message")
    finally:
        await stop()

