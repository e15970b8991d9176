// Reply playback: a jitter buffer on the audio thread.
//
// Messages in:
//   {type: "audio", rid, samples: Float32Array}  reply audio at the context rate
//   {type: "flush", rid}   interrupted: drop everything buffered for rid, at once
//   {type: "done", rid}    no more audio for rid: running dry is the end, not an underrun
// Playout of a response starts jitterSamples (40 ms) after its first audio
// arrives, then plays in real time; when the buffer runs dry before "done"
// it plays silence and counts an underrun.
// Messages out ({type: "stats"}, every ~50 ms and on flush): played samples
// (all responses, and of the current one), their RMS, the loudest 100 ms
// block's RMS, underruns, buffered samples, and on the context's sample clock
// the current response's first sample played (ridFrom) and the end of its
// last one so far (ridTo), null before it plays.

class RejoinderPlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.jitter = opts.jitterSamples ?? Math.round(sampleRate * 0.04);
    this.statsEvery = Math.round(sampleRate * 0.05);
    this.block = Math.round(sampleRate * 0.1);
    this.queue = [];
    this.head = 0; // samples of queue[0] already played
    this.buffered = 0;
    this.rid = null;
    this.ridPlayed = 0;
    this.ridFrom = null;
    this.ridTo = null;
    this.startAt = 0;
    this.finished = false;
    this.dry = false;
    this.played = 0;
    this.sumSq = 0;
    this.blockSumSq = 0;
    this.blockFill = 0;
    this.peakRms = 0;
    this.underruns = 0;
    this.flushed = 0;
    this.sinceStats = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      if (msg.rid !== this.rid) {
        this.queue = [];
        this.head = 0;
        this.buffered = 0;
        this.rid = msg.rid;
        this.ridPlayed = 0;
        this.ridFrom = null;
        this.ridTo = null;
        this.finished = false;
        this.dry = false;
        this.startAt = currentFrame + this.jitter;
      } else if (this.dry && !this.finished) {
        this.underruns++;
        this.dry = false;
      }
      this.queue.push(msg.samples);
      this.buffered += msg.samples.length;
    } else if (msg.type === "flush") {
      if (msg.rid == null || msg.rid === this.rid) {
        this.flushed += this.buffered;
        this.queue = [];
        this.head = 0;
        this.buffered = 0;
        this.finished = true;
        this.postStats();
      }
    } else if (msg.type === "done") {
      if (msg.rid === this.rid) this.finished = true;
    }
  }

  postStats() {
    this.port.postMessage({
      type: "stats",
      rid: this.rid,
      ridPlayed: this.ridPlayed,
      ridFrom: this.ridFrom,
      ridTo: this.ridTo,
      played: this.played,
      sumSq: this.sumSq,
      peakRms: this.peakRms,
      underruns: this.underruns,
      buffered: this.buffered,
      flushed: this.flushed,
      finished: this.finished,
      frame: currentFrame,
    });
    this.sinceStats = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    out.fill(0);
    let i = 0;
    if (this.rid !== null && currentFrame + n > this.startAt) {
      i = Math.max(0, this.startAt - currentFrame);
      while (i < n && this.queue.length) {
        const chunk = this.queue[0];
        const take = Math.min(n - i, chunk.length - this.head);
        if (this.ridFrom === null) this.ridFrom = currentFrame + i;
        this.ridTo = currentFrame + i + take;
        for (let k = 0; k < take; k++) {
          const s = chunk[this.head + k];
          out[i + k] = s;
          this.sumSq += s * s;
          this.blockSumSq += s * s;
          if (++this.blockFill === this.block) {
            this.peakRms = Math.max(this.peakRms, Math.sqrt(this.blockSumSq / this.block));
            this.blockSumSq = 0;
            this.blockFill = 0;
          }
        }
        i += take;
        this.head += take;
        this.buffered -= take;
        this.played += take;
        this.ridPlayed += take;
        if (this.head === chunk.length) {
          this.queue.shift();
          this.head = 0;
        }
      }
      if (i < n && !this.dry && this.ridPlayed > 0) this.dry = true;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceStats += n;
    if (this.sinceStats >= this.statsEvery) this.postStats();
    return true;
  }
}

registerProcessor("rejoinder-playback", RejoinderPlayback);
