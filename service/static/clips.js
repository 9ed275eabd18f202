// vsod page, clip part: upload with progress (POST /v1/clips), job polling, the mask video.
// Loads after app.js, whose helpers it uses (window.vsod.ui).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    clipForm: $("clip-form"), clipFile: $("clip-file"), clipSubmit: $("clip-submit"),
    uploadProgress: $("upload-progress"), uploadText: $("upload-text"), jobProgress: $("job-progress"), jobText: $("job-text"),
    clipSource: $("clip-source"), clipResult: $("clip-result"), downloads: $("downloads"),
  };
  const { showError, hideBanner, authHeaders, detailOf, httpError, sleep } = window.vsod.ui;
  // State the browser test reads back (window.vsod.clip).
  const clip = { jobId: null, status: null, frames: 0, resultBytes: 0, resultPlayable: false, name: "clip" };
  window.vsod.clip = clip;

  function setUploading(busy) {
    els.clipSubmit.disabled = busy;
    els.clipFile.disabled = busy;
  }

  function uploadClip(event) {
    event.preventDefault();
    hideBanner();
    const file = els.clipFile.files[0];
    if (!file) { showError("Choose a video file first."); return; }
    clip.name = file.name.replace(/\.[^.]*$/, "") || "clip";
    clip.jobId = null;
    clip.status = "uploading";
    clip.resultPlayable = false;
    if (els.clipSource.src) URL.revokeObjectURL(els.clipSource.src);
    els.clipSource.src = URL.createObjectURL(file);
    els.clipResult.removeAttribute("src");
    els.downloads.hidden = true;
    els.uploadProgress.value = 0;
    els.jobProgress.value = 0;
    els.jobText.textContent = "–";
    setUploading(true);

    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest(); // fetch() reports no upload progress
    xhr.open("POST", "/v1/clips");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      els.uploadProgress.value = e.loaded / e.total;
      els.uploadText.textContent = `${Math.round((100 * e.loaded) / e.total)}% of ${(e.total / 1e6).toFixed(1)} MB`;
    };
    xhr.onload = () => {
      if (xhr.status !== 202) {
        clip.status = "refused";
        showError(`Upload refused: ${detailOf(xhr.status, xhr.responseText)}`);
        setUploading(false);
        return;
      }
      els.uploadProgress.value = 1;
      els.uploadText.textContent = "uploaded";
      pollJob(JSON.parse(xhr.responseText).job_id);
    };
    xhr.onerror = () => {
      clip.status = "refused";
      showError("Upload failed: the server could not be reached.");
      setUploading(false);
    };
    xhr.send(form);
  }

  async function pollJob(jobId) {
    clip.jobId = jobId;
    try {
      while (clip.jobId === jobId) {
        const response = await fetch(`/v1/jobs/${jobId}`, { headers: authHeaders() });
        if (!response.ok) throw new Error(`job status: ${await httpError(response)}`);
        const job = await response.json();
        clip.status = job.status;
        clip.frames = job.frames_done;
        const total = job.frames_total || 0;
        els.jobProgress.value = total ? Math.min(1, job.frames_done / total) : 0;
        els.jobText.textContent = `${job.status} ${job.frames_done}/${total || "?"}`;
        if (job.status === "done") { await showResult(jobId); break; }
        if (job.status === "failed") { showError(`The clip job failed: ${job.error}`); break; }
        await sleep(500);
      }
    } catch (error) {
      showError(error.message);
    } finally {
      setUploading(false);
    }
  }

  async function fetchResult(jobId, format) {
    const response = await fetch(`/v1/jobs/${jobId}/result?format=${format}`, { headers: authHeaders() });
    if (!response.ok) throw new Error(`result: ${await httpError(response)}`);
    return response.blob();
  }

  async function showResult(jobId) {
    const blob = await fetchResult(jobId, "mp4"); // fetched, not linked: a <video src> cannot send the API key
    clip.resultBytes = blob.size;
    if (els.clipResult.src) URL.revokeObjectURL(els.clipResult.src);
    els.clipResult.src = URL.createObjectURL(blob);
    els.downloads.hidden = false;
  }

  els.clipSource.addEventListener("error", () => {
    if (els.clipSource.getAttribute("src")) els.clipSource.nextElementSibling.textContent = "your clip (no preview: this browser cannot play its format)";
  });
  els.clipSource.addEventListener("loadeddata", () => { els.clipSource.nextElementSibling.textContent = "your clip"; });
  els.clipResult.addEventListener("loadeddata", () => { clip.resultPlayable = true; });
  els.clipResult.addEventListener("error", () => {
    if (els.clipResult.getAttribute("src")) showError("This browser cannot play the mask video (H.264); use the download buttons.");
  });
  els.downloads.addEventListener("click", async (event) => {
    const format = event.target.dataset && event.target.dataset.format;
    if (!format || !clip.jobId) return;
    try {
      const blob = await fetchResult(clip.jobId, format);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `${clip.name}_masks.${format}`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      showError(error.message);
    }
  });
  els.clipForm.addEventListener("submit", uploadClip);

})();
