// The master's REST API, with the session cookie (same origin, so fetch sends it by itself).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Called when any request answers 401: the session ended (signed out elsewhere, master restarted).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (err) {
    throw new ApiError(0, "the master cannot be reached");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      if (data && typeof data.error === "string") message = data.error;
    } catch (_) {
      // not JSON: keep the status line
    }
    if (response.status === 401 && path !== "/session") onUnauthorized();
    throw new ApiError(response.status, message);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

// Upload a File to POST /blobs, reporting progress (0..1); resolves to {id, size}.
export function uploadBlob(file, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/blobs");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (_) {
        // keep null
      }
      if (xhr.status === 201 && data) resolve(data);
      else {
        if (xhr.status === 401) onUnauthorized();
        reject(new ApiError(xhr.status, data?.error || `upload failed (${xhr.status})`));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "upload failed: the master cannot be reached")));
    xhr.send(file);
  });
}

export function blobUrl(id) {
  return `/api/v1/blobs/${encodeURIComponent(id)}`;
}
