// A compute job (a fit-td simulation, a PHREEQC run) as the page follows it: `job` events
// move its progress bar and status line, and Cancel asks its service to end it. Events are
// news that can be lost (a service restarting as the job ends): after STATUS_AFTER_MS without
// one, the service's `status` says where the job is.
import { $ } from "./dom.js";

const STATUS_AFTER_MS = 5000;

export class JobTracker {
  // `prefix`: the page's `${prefix}-progress`, `-status` and `-cancel` elements; `running`:
  // the status line of a running job's event; `ended`: called once a job is done or failed.
  constructor(view, service, prefix, { running, ended }) {
    Object.assign(this, { view, service, prefix, running, ended });
    this.job = null;
  }

  async cancel() {
    if (this.job) await this.view.call(this.service, "cancel", { job: this.job });
  }

  async askStatus(job) {
    const now = await this.view.call(this.service, "status", { job });
    if (now && now.job === this.job) this.onJob(now);
  }

  onJob(event) {
    this.job = event.job;
    clearTimeout(this.quiet);  // a newer word than the one asked for
    if (event.status === "running") {
      this.quiet = setTimeout(() => this.askStatus(event.job), STATUS_AFTER_MS);
    }
    const bar = $(`${this.prefix}-progress`);
    if (event.steps) {
      bar.max = event.steps;
      bar.value = event.step;
    } else if (event.status === "running") {
      bar.removeAttribute("value");  // how far is unknown: the bar says it is busy
    } else {
      bar.max = 1;
      bar.value = event.status === "done" ? 1 : 0;
    }
    bar.dataset.status = event.status;
    $(`${this.prefix}-cancel`).disabled = event.status !== "running";
    $(`${this.prefix}-status`).textContent = event.status === "running" ? this.running(event)
      : event.status === "done" ? `done: ${event.results.length} results${
        event.reason ? ` (${event.reason})` : ""}`
        : `${event.status}${event.reason ? `: ${event.reason}` : ""}`;
    if (event.status !== "running") this.ended(event);
  }
}
