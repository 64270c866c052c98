// The login page: post the token once; the server keeps it in an HttpOnly cookie, then back to the page asked for.
import { api } from "./common.js";

const form = document.getElementById("login-form");
if (form) {
  const problem = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    try {
      await api("/api/session", { method: "POST", body: { token: form.token.value.trim() }, login: false });
      window.location.assign(form.dataset.next || "/");
    } catch (error) {
      problem.textContent = error.message;
      problem.hidden = false;
    }
  });
}
