// pgjobs dashboard: confirmations and double-submit protection for action forms.
// The pages work without it; the server refuses forged and repeated actions on its own.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
  var button = event.submitter || form.querySelector("button");
  var question = button && button.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (form.getAttribute("data-submitted")) {
    event.preventDefault();
    return;
  }
  form.setAttribute("data-submitted", "1");
  if (button) {
    window.setTimeout(function () { button.disabled = true; }, 0);
  }
});
