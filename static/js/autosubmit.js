// Filters that apply on change (the CSP allows no inline handlers): any input or select
// with data-autosubmit submits its form.
document.addEventListener("change", (event) => {
  const field = event.target.closest("[data-autosubmit]");
  if (field && field.form) field.form.submit();
});
