// Microphone capture: posts 20 ms PCM16 frames at the AudioContext's own rate.
//
// The browser's getUserMedia pipeline has already applied echo cancellation,
// noise suppression and auto gain; the AudioContext has already converted
// the device rate to its own. This processor only cuts frames and converts
// float32 to PCM16LE (rounded, clipped, as the server's float32_to_pcm16).
// Each message: {pcm: ArrayBuffer (transferred), samples, rms, frame,
// endFrame: the context's sample clock (currentFrame) at the frame's end}.
// No input (track muted or ended) counts as silence, so the sent timeline
// keeps real time like a live microphone.

class RejoinderCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = opts.frameSamples || Math.round(sampleRate * 0.02);
    this.buf = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.sumSq = 0;
    this.frame = 0;
  }

  process(inputs) {
    const input = inputs[0] || [];
    const channels = input.length;
    const n = channels ? input[0].length : 128;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < channels; c++) s += input[c][i];
      if (channels > 1) s /= channels;
      this.sumSq += s * s;
      let v = Math.round(s * 32768);
      if (v > 32767) v = 32767;
      else if (v < -32768) v = -32768;
      this.buf[this.fill++] = v;
      if (this.fill === this.frameSamples) {
        const rms = Math.sqrt(this.sumSq / this.frameSamples);
        this.port.postMessage(
          { pcm: this.buf.buffer, samples: this.frameSamples, rms, frame: this.frame++, endFrame: currentFrame + i + 1 },
          [this.buf.buffer],
        );
        this.buf = new Int16Array(this.frameSamples);
        this.fill = 0;
        this.sumSq = 0;
      }
    }
    return true;
  }
}

registerProcessor("rejoinder-capture", RejoinderCapture);
