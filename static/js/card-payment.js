// Card payment on the order page. Stripe.js collects the card (it never reaches our
// server): a SetupIntent gives a PaymentMethod, our server charges it once, the bank may
// ask for 3-D Secure, and the page waits for Stripe's webhook to mark the order paid.
(function () {
  const box = document.getElementById("card-payment");
  if (!box || typeof Stripe === "undefined") return;
  const stripe = Stripe(box.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const form = document.getElementById("card-form");
  const button = document.getElementById("card-submit");
  const message = document.getElementById("card-message");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function say(text) { message.textContent = text; }

  async function waitForWebhook() {
    for (let i = 0; i < 60; i++) {
      const response = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
      const state = await response.json();
      if (state.payment_status === "paid") { say("Paid. Reloading…"); window.location.reload(); return; }
      if (state.payment_status === "failed" || state.payment_status === "flagged") {
        say("Payment status: " + state.payment_status_label + ". Reloading…"); window.location.reload(); return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    say("Stripe has not confirmed the payment yet; this page shows it once it does.");
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    button.disabled = true;
    say("Checking the card…");
    const setup = await stripe.confirmCardSetup(box.dataset.setupSecret, { payment_method: { card: card } });
    if (setup.error) { say(setup.error.message || "The card was not accepted."); button.disabled = false; return; }
    say("Charging the card…");
    const response = await fetch(box.dataset.payUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ payment_method: setup.setupIntent.payment_method }),
    });
    const answer = await response.json();
    if (!response.ok) { say(answer.error || "The payment failed."); button.disabled = false; return; }
    if (answer.status === "requires_action") {
      const confirmed = await stripe.confirmCardPayment(answer.client_secret);
      if (confirmed.error) { say(confirmed.error.message || "Authentication failed."); button.disabled = false; return; }
    }
    say(answer.message || "Waiting for Stripe's confirmation…");
    waitForWebhook();
  });
})();
